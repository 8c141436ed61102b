"""One module per workload; ``benchmarks.registry.load_all`` imports every module here
whose name does not start with an underscore."""

ORDER = (
    "spawn_join",
    "checkpoints",
    "queue_ping_pong",
    "timers",
    "tcp_echo",
    "tcp_echo_lowlevel",
    "tcp_bulk",
    "tcp_bulk_lowlevel",
    "to_thread",
    "thread_queue_baseline",
    "portal_submit",
    "executor_submit_baseline",
    "gil_scaling_hash",
    "gil_scaling_python",
    "process_call",
    "process_call_baseline",
    "process_call_concurrent",
    "process_bulk",
    "process_bulk_numpy",
    "process_cpu_scaling",
    "cluster_calls",
    "cluster_calls_baseline",
    "idle_task_bytes",
    "tcp_conn_bytes",
)
"""Workloads are reported in this order (DESIGN.md section 7); unlisted ones follow,
alphabetically."""

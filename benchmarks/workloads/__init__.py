"""One module per workload; ``benchmarks.registry.load_all`` imports every module here
whose name does not start with an underscore."""

ORDER = (
    "spawn_join",
    "checkpoints",
    "queue_ping_pong",
    "timers",
    "tcp_echo",
    "idle_task_bytes",
)
"""Workloads are reported in this order (DESIGN.md section 7); unlisted ones follow,
alphabetically."""

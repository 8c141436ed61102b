"""One measurement in a fresh interpreter: ``python -m benchmarks.child WORKLOAD RUNTIME
PARAMS_JSON``. Prints one line ``RESULT_MARKER {"raw": ..., "value": ...}`` on stdout and
exits 0; on failure prints the traceback on stderr and exits non-zero."""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

from benchmarks.registry import RUNTIMES, WORKLOADS, find_impl, load_all

RESULT_MARKER = "@@benchmark-result@@"


def measure(workload_name: str, runtime_name: str, params: dict[str, Any]) -> dict[str, float]:
    load_all()
    workload = WORKLOADS[workload_name]
    runtime = RUNTIMES[runtime_name]
    fn = find_impl(workload_name, runtime_name)
    if fn is None:
        raise LookupError(f"no implementation of {workload_name} for {runtime_name}")

    async def main() -> float:
        return await fn(**params)

    gc.collect()
    raw = float(runtime.runner(main))
    return {"raw": raw, "value": float(workload.metric(raw, **params))}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    workload_name, runtime_name, params_json = argv
    result = measure(workload_name, runtime_name, json.loads(params_json))
    print(RESULT_MARKER, json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

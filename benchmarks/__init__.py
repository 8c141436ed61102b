"""Benchmarks comparing plait with asyncio, asyncio+uvloop and trio (DESIGN.md section 7).

Run ``python -m benchmarks --help``. Workloads live in ``benchmarks/workloads/`` (one module
each), runtimes in ``benchmarks/runtimes.py``; see ``benchmarks/registry.py`` for how to add
either.
"""

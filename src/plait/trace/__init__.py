"""plait.trace: a timeline of what ran when.

``Tracer`` is an instrument (``plait.run(main, instruments=[tracer])``) that records
every task step, which task (or which timer, fd or thread) made each task runnable, the
loop's waits for I/O, and the thread, process and subprocess jobs; then writes them as
Chrome/Perfetto trace-event JSON (``write_perfetto``), as one self-contained HTML page
with a row per task (``write_html``), or summarises them (``summary``).
"""

from __future__ import annotations

from ._tracer import Tracer as Tracer

__all__ = ["Tracer"]

Tracer.__module__ = __name__

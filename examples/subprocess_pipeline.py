"""A shell pipeline built from plait streams: generator | sort | uniq -c.

Each child's output is pumped into the next child's stdin by a plait task, the way a
shell connects them with pipes; the last stage's output is printed. `async with` on
each process guarantees that no child outlives the block, whatever happens.
"""

from __future__ import annotations

import subprocess
import sys

import plait

PIPE = subprocess.PIPE

GENERATOR = """
import random
rng = random.Random(42)
for _ in range(10_000):
    print(rng.choice(["apple", "banana", "cherry", "damson", "elderberry"]))
"""


async def pump(source: plait.Stream, sink: plait.Stream) -> None:
    """Copy everything from ``source`` to ``sink``, then close ``sink`` (EOF)."""
    async for chunk in source:
        await sink.send_all(chunk)
    await sink.send_eof()


async def main() -> None:
    async with (
        await plait.open_process([sys.executable, "-c", GENERATOR], stdout=PIPE) as gen,
        await plait.open_process(["sort"], stdin=PIPE, stdout=PIPE) as sort,
        await plait.open_process(["uniq", "-c"], stdin=PIPE, stdout=PIPE) as uniq,
    ):
        assert gen.stdout and sort.stdin and sort.stdout and uniq.stdin and uniq.stdout
        async with plait.TaskGroup() as tg:
            tg.spawn(pump, gen.stdout, sort.stdin)
            tg.spawn(pump, sort.stdout, uniq.stdin)
            counts = b"".join([chunk async for chunk in uniq.stdout])
        codes = [await p.wait() for p in (gen, sort, uniq)]
    print("count  fruit")
    for line in counts.decode().splitlines():
        number, word = line.split()
        print(f"{number:>5}  {word}")
    print(f"exit codes: {codes}")


if __name__ == "__main__":
    plait.run(main)

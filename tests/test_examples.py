"""The examples run to completion (they are documentation: they must not rot)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
NEEDS = {"cluster_map.py": "distributed"}
"""Examples that need an optional package (an extra): skipped where it is missing."""


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: Path) -> None:
    needed = NEEDS.get(path.name)
    if needed is not None and importlib.util.find_spec(needed) is None:
        pytest.skip(f"{path.name} needs {needed}: pip install 'plait[cluster]'")
    proc = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip(), "an example should show what happened"
    assert not proc.stderr.strip(), proc.stderr


CONCEPTS = ROOT / "docs" / "concepts.md"
REQUIRED_CONCEPTS = [
    "closures and captured variables",
    "generators",
    "`send`, `yield from` and `await`",
    "native coroutines and `types.coroutine`",
    "async generators",
    "the execution stack and frames",
    "garbage collection and reference cycles",
    "the gil",
    "the event loop, with and without coroutines",
]
"""The concepts that issue 11 asks docs/concepts.md to explain (its ``## `` headings)."""


def concept_sections() -> dict[str, str]:
    """The ``## `` sections of docs/concepts.md: heading -> body."""
    sections: dict[str, str] = {}
    heading = None
    in_code = False
    for line in CONCEPTS.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if line.startswith("## ") and not in_code:
            heading = line[3:].strip()
            sections[heading] = ""
        elif heading is not None:
            sections[heading] += line + "\n"
    return sections


def test_concepts_page_covers_the_concepts() -> None:
    headings = [h.lower() for h in concept_sections()]
    missing = [c for c in REQUIRED_CONCEPTS if c not in headings]
    assert not missing, f"docs/concepts.md has no section for {missing}"


def test_every_concept_links_to_an_example_that_runs() -> None:
    run = {p.name for p in EXAMPLES}
    for heading, body in concept_sections().items():
        links = re.findall(r"\]\(\.\./examples/([^)#]+)\)", body)
        assert links, f"section {heading!r} of docs/concepts.md links to no example"
        for name in links:
            assert name in run, f"section {heading!r} links to examples/{name}, not found"

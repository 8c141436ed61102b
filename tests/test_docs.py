"""The documentation stays true: every program of docs/tutorial.md and
docs/from-asyncio.md runs, and docs/api.md is what docs/gen_api.py makes of the
docstrings."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "docs" / "tutorial.md", ROOT / "docs" / "from-asyncio.md"]
"""Pages whose ```python blocks are complete programs."""
NEEDS = re.compile(r"#\s*needs:\s*(?P<modules>[\w.,\s]+)$")
"""A block whose first line is ``# needs: distributed`` is skipped where that module
is missing (an optional extra)."""


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown file: (line number of the fence, code)."""
    blocks = []
    lines = path.read_text(encoding="utf-8").splitlines()
    start = None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == "```python":
            start = number
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(lines[start : number - 1]) + "\n"))
            start = None
    assert start is None, f"{path.name}:{start}: a ```python block is never closed"
    return blocks


BLOCKS = [(f"{page.stem}:{line}", code) for page in PAGES for line, code in python_blocks(page)]


def run_python(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run this interpreter with the repository's ``src`` first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def missing_module(code: str) -> str | None:
    """The first module a ``# needs: ...`` first line names that is not installed."""
    needs = NEEDS.match(code.splitlines()[0].strip())
    if needs is not None:
        for module in needs["modules"].replace(",", " ").split():
            if importlib.util.find_spec(module) is None:
                return module
    return None


@pytest.fixture(scope="module")
def jobs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """Every subprocess of this module, started together: most of their time is spent
    starting interpreters and waiting, so four at once take a third of the time. The
    slow ones (a cluster start) go first."""
    with ThreadPoolExecutor(4) as pool:
        started = {}
        order = sorted(BLOCKS, key=lambda block: NEEDS.match(block[1].split("\n")[0]) is None)
        for where, code in order:
            if missing_module(code) is None:
                directory = tmp_path_factory.mktemp("program")
                (directory / "program.py").write_text(code, encoding="utf-8")
                started[where] = pool.submit(run_python, ["program.py"], directory)
        api_check = [str(ROOT / "docs" / "gen_api.py"), "--check"]
        started["api"] = pool.submit(run_python, api_check, tmp_path_factory.mktemp("api"))
        yield started


def test_pages_have_programs() -> None:
    assert len(python_blocks(PAGES[0])) >= 10


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_program_runs(
    where: str, code: str, jobs: dict[str, Future[subprocess.CompletedProcess[str]]]
) -> None:
    """Exit status 0 and nothing on stderr: no error, no warning, no log record."""
    missing = missing_module(code)
    if missing is not None:
        pytest.skip(f"needs {missing}")
    proc = jobs[where].result()
    first = code.splitlines()[0]
    assert proc.returncode == 0 and not proc.stderr, (
        f"{where}: the block starting {first!r} exited with {proc.returncode}"
        f" and wrote to stderr:\n{proc.stderr}"
    )


def test_api_reference_is_current(
    jobs: dict[str, Future[subprocess.CompletedProcess[str]]],
) -> None:
    """A docstring changed without ``.venv/bin/python docs/gen_api.py`` fails here."""
    proc = jobs["api"].result()
    assert proc.returncode == 0, proc.stdout + proc.stderr

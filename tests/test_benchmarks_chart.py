"""The benchmark chart (benchmarks/chart.py) and the JSON form of the results it is drawn
from (benchmarks/harness.py), on hand-made results: nothing is measured."""

from __future__ import annotations

import datetime as dt
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the benchmarks package is not installed, it is in the tree
    sys.path.insert(0, str(ROOT))

from benchmarks import chart, cli, report  # noqa: E402
from benchmarks.harness import Cell, Results  # noqa: E402
from benchmarks.registry import load_all  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"
RUNTIMES = ["plait", "asyncio", "uvloop", "trio"]
SAMPLES = {
    # higher is better: plait twice asyncio's speed, trio half
    "spawn_join": {
        "plait": [200e3, 190e3, 210e3],
        "asyncio": [100e3],
        "uvloop": [110e3],
        "trio": [50e3],
    },
    # lower is better: plait half asyncio's time (twice the speed), trio 4 times its time
    "timers": {"plait": [30.0], "asyncio": [60.0], "uvloop": [60.0], "trio": [240.0]},
    # the same code on every runtime: left out
    "thread_queue_baseline": {"plait": [1.0], "asyncio": [1.0], "uvloop": [1.0], "trio": [1.0]},
    # no asyncio median: left out
    "checkpoints": {"plait": [5.0], "asyncio": [], "uvloop": [2.0], "trio": [1.0]},
}


@pytest.fixture(scope="module", autouse=True)
def registry() -> None:
    load_all()


def make_results() -> Results:
    cells = {
        (w, r): Cell(w, r, list(values)) for w, by in SAMPLES.items() for r, values in by.items()
    }
    cells["checkpoints", "asyncio"].status = "error: it <broke> & stopped"
    cells["timers", "uvloop"].status = "error: after one run"  # still has a value
    return Results(
        list(SAMPLES),
        RUNTIMES,
        reps=3,
        quick=False,
        params={w: {"n": 10, "name": "x"} for w in SAMPLES},
        cells=cells,
        seconds=12.5,
        load=(0.25, 0.5),
        date=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        environment={
            "python": "3.11.7 (CPython, GCC 12.2.0, no PGO/LTO), /x/python",
            "machine": "2 CPUs (nproc), Test CPU, Linux 6.1",
            "trio": "0.35.0",
            "git revision": "abc1234",
        },
        command=".venv/bin/python -m benchmarks --reps 3",
    )


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def bars(root: ET.Element) -> dict[tuple[str, str], ET.Element]:
    """The bars, by (workload, runtime), from their tooltips ("plait, spawn_join: ...")."""
    out = {}
    for rect in root.iter(f"{SVG}rect"):
        title = rect.find(f"{SVG}title")
        if title is not None and title.text:
            runtime, _, rest = title.text.partition(", ")
            out[rest.partition(":")[0], runtime] = rect
    return out


def texts(root: ET.Element) -> list[str]:
    """What the text elements show (not their tooltips, ``<title>`` children)."""
    return [(t.text or "") + "".join(c.tail or "" for c in t) for t in root.iter(f"{SVG}text")]


def asyncio_line_x(root: ET.Element) -> float:
    lines = [ln for ln in root.iter(f"{SVG}line") if ln.get("stroke-width") == "1.5"]
    assert len(lines) == 1
    assert lines[0].get("x1") == lines[0].get("x2")
    return float(lines[0].get("x1", "nan"))


def span(rect: ET.Element) -> tuple[float, float]:
    x, w = float(rect.get("x", "nan")), float(rect.get("width", "nan"))
    return x, x + w


class TestChart:
    def test_valid_svg_of_fixed_width(self) -> None:
        root = parse(chart.svg(make_results()))
        assert root.tag == f"{SVG}svg"
        assert root.get("width") == "900"
        assert root.get("viewBox", "").startswith("0 0 900 ")
        assert not list(root.iter(f"{SVG}script"))
        assert "href" not in chart.svg(make_results())  # no external resource

    def test_one_bar_per_runtime_but_asyncio(self) -> None:
        found = bars(parse(chart.svg(make_results())))
        for w in ("spawn_join", "timers"):
            assert {r for (w2, r) in found if w2 == w} == {"plait", "uvloop", "trio"}

    def test_colour_per_runtime_is_the_same_in_every_group(self) -> None:
        found = bars(parse(chart.svg(make_results())))
        for r in ("plait", "uvloop", "trio"):
            assert found["spawn_join", r].get("fill") == found["timers", r].get("fill")
        assert len({found["spawn_join", r].get("fill") for r in ("plait", "uvloop", "trio")}) == 3

    def test_bars_start_at_the_asyncio_line(self) -> None:
        root = parse(chart.svg(make_results()))
        one = asyncio_line_x(root)
        found = bars(root)
        faster, slower = span(found["spawn_join", "plait"]), span(found["spawn_join", "trio"])
        assert faster[0] == pytest.approx(one, abs=0.2) and faster[1] > one + 50
        assert slower[1] == pytest.approx(one, abs=0.2) and slower[0] < one - 50
        # log scale: twice as fast and twice as slow are bars of the same length
        assert faster[1] - faster[0] == pytest.approx(slower[1] - slower[0], abs=0.3)

    def test_lower_is_better_is_inverted(self) -> None:
        root = parse(chart.svg(make_results()))
        one = asyncio_line_x(root)
        found = bars(root)
        # timers: plait's half of asyncio's time is twice its speed, to the right
        assert span(found["timers", "plait"]) == pytest.approx(span(found["spawn_join", "plait"]))
        assert span(found["timers", "trio"])[1] == pytest.approx(one, abs=0.2)
        labels = texts(root)
        assert labels.count("2.00x") == 2  # spawn_join and timers, plait
        assert "0.50x" in labels and "0.25x" in labels  # trio on spawn_join and on timers
        assert "4.00x" not in labels  # the report's cost ratio of trio on timers
        assert "lower is better: inverted" in labels  # under timers' name
        explained = " ".join(labels)
        assert "Higher is better throughout" in explained and "inverted" in explained

    def test_ticks_are_labelled_as_ratios(self) -> None:
        labels = texts(parse(chart.svg(make_results())))
        for tick in ("0.25x", "0.5x", "1x", "2x"):
            assert tick in labels

    def test_baselines_and_workloads_without_asyncio_are_left_out_and_listed(self) -> None:
        root = parse(chart.svg(make_results()))
        drawn = {w for w, _ in bars(root)}
        assert drawn == {"spawn_join", "timers"}
        footnotes = " ".join(t for t in texts(root) if t.startswith("Left out") or "_" in t)
        assert "thread_queue_baseline" in footnotes
        assert "checkpoints" in footnotes
        assert "thread_queue_baseline" not in {t for t in texts(root) if t == "spawn_join"}

    def test_title_says_when_python_and_machine(self) -> None:
        labels = texts(parse(chart.svg(make_results())))
        assert any("2026-01-02" in t and "CPython 3.11.7" in t and "abc1234" in t for t in labels)
        assert "2 CPUs, Test CPU, Linux 6.1" in labels

    def test_deterministic(self) -> None:
        assert chart.svg(make_results()) == chart.svg(make_results())

    def test_a_runtime_without_numbers_is_a_note(self) -> None:
        results = make_results()
        for w in results.workloads:
            results.cell(w, "uvloop").values.clear()
            results.cell(w, "uvloop").status = "not installed"
        root = parse(chart.svg(results))
        assert {r for _, r in bars(root)} == {"plait", "trio"}
        assert texts(root).count("not installed") == 2

    def test_text_is_escaped(self) -> None:
        results = make_results()
        results.cell("timers", "trio").values.clear()
        results.cell("timers", "trio").status = "error: <a> & 'b'"
        root = parse(chart.svg(results))  # well-formed despite < and &
        (note,) = [t for t in root.iter(f"{SVG}text") if t.find(f"{SVG}title") is not None]
        assert note.text is None and note[0].tail == "error"
        assert note[0].text == "trio, timers: error: <a> & 'b'"

    def test_nothing_to_draw(self) -> None:
        results = make_results()
        results.runtimes = ["plait", "uvloop"]  # no asyncio
        root = parse(chart.svg(results))
        assert not bars(root)
        assert any("spawn_join" in t for t in texts(root))  # listed as left out


class TestJson:
    def test_round_trip(self) -> None:
        results = make_results()
        again = Results.from_json(results.to_json())
        assert again == results
        assert again.to_json() == results.to_json()
        assert report.markdown(again, chart="b.svg") == report.markdown(results, chart="b.svg")
        assert chart.svg(again) == chart.svg(results)

    def test_report_shows_the_stored_environment(self) -> None:
        text = report.markdown(Results.from_json(make_results().to_json()))
        assert "| git revision | abc1234 |" in text
        assert "| date | 2026-01-02 03:04 UTC |" in text
        assert "| load average (1 min) | 0.25 before, 0.50 after |" in text
        assert ".venv/bin/python -m benchmarks --reps 3\n" in text

    @pytest.mark.parametrize("text", ["", "[]", '{"format": 99}', '{"format": 1}', "not json"])
    def test_not_results(self, text: str) -> None:
        with pytest.raises(ValueError, match="not a benchmark results file"):
            Results.from_json(text)


class TestCli:
    def test_from_json_writes_report_chart_and_results(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        saved = tmp_path / "saved.json"
        saved.write_text(make_results().to_json())
        out = tmp_path / "docs" / "bench.md"
        assert cli.main(["--from-json", str(saved), "--write", str(out)]) == 1  # an error cell
        text = out.read_text()
        assert "![plait vs asyncio, uvloop and trio](bench.svg)" in text
        assert "```\n.venv/bin/python -m benchmarks --reps 3\n```" in text  # not --from-json
        assert "[bench.json](bench.json)" in text
        assert (tmp_path / "docs" / "bench.svg").read_text() == chart.svg(make_results())
        assert (tmp_path / "docs" / "bench.json").read_text() == saved.read_text()
        assert "| spawn_join | plait | 200.0k |" in capsys.readouterr().out

    def test_from_json_refuses_measuring_options(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        saved = tmp_path / "saved.json"
        saved.write_text(make_results().to_json())
        with pytest.raises(SystemExit):
            cli.main(["--from-json", str(saved), "--reps", "2", "--write", "-"])
        assert "no --reps" in capsys.readouterr().err

"""Draw benchmark results as an SVG chart: every runtime's speed relative to asyncio.

Theory of operation. One group of horizontal bars per workload, one bar per runtime but
asyncio, whose place is a vertical line at 1x. The axis is logarithmic (base 2) and each
bar starts at 1x and ends at the runtime's speed relative to asyncio: bars to the right
are faster, bars to the left slower, and twice as fast is as long as twice as slow. Every
bar reads "higher is better": for a workload whose number is higher-is-better (tasks/s,
a speed-up) it is the report's "vs asyncio", median / asyncio median; for a
lower-is-better one (a time, bytes) it is the inverse, asyncio median / median. Workloads
that measure no runtime (``*_baseline``) and those without an asyncio median are left out
and listed in a footnote.

The SVG is written by hand with the standard library, rejecting a plotting library
(matplotlib) as a dependency for one chart. It uses the system sans-serif font, has a
white background (GitHub's dark theme would put black text on a dark page), no script and
no external resource. There are no font metrics, so text widths are estimates from the
number of characters, generous ones. The output depends on nothing but the ``Results``:
rendering them twice gives the same bytes.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from benchmarks.harness import BASELINE, Results, format_value
from benchmarks.registry import WORKLOADS

WIDTH = 900
"""Pixels: GitHub shows Markdown images at most about this wide."""
MARGIN = 16
FONT = "-apple-system, BlinkMacSystemFont, 'Segoe UI', Helvetica, Arial, sans-serif"
CHAR = 0.55
"""Estimated mean width of a character, in font sizes (a generous one for sans-serif)."""
ROW = 15
"""Pixels from one bar to the next."""
BAR = 11
VALUE_ROOM = 46
"""Pixels beyond each end of the axis for the label at the end of the longest bar."""
TEXT = "#24292f"
MUTED = "#57606a"
GRID = "#d0d7de"
BAND = "#f6f8fa"
COLOURS = {
    "plait": "#d55e00",
    "plait.aio": "#e69f00",
    "uvloop": "#0072b2",
    "trio": "#009e73",
}
"""The Okabe-Ito palette (distinguishable with colour blindness) for the usual runtimes;
``SPARE`` for others, in the order they come."""
SPARE = ("#cc79a7", "#56b4e9", "#000000", "#999933", "#882255")


@dataclass(frozen=True)
class Bar:
    runtime: str
    speed: float | None
    """Speed relative to asyncio (higher is better); ``None``: no bar, ``note`` instead."""
    note: str
    """The label: ``"1.91x"``, or why there is no bar (``"not installed"``)."""
    tip: str
    """The tooltip (a browser shows it when the SVG is opened directly)."""


@dataclass(frozen=True)
class Group:
    workload: str
    lines: list[str]
    """The label: workload name, then its unit and, if lower is better, that the bars are
    inverted, wrapped."""
    bars: list[Bar]


def speed(results: Results, workload: str, runtime: str) -> float | None:
    """``runtime``'s speed relative to asyncio on ``workload``: higher is better."""
    ratio = results.ratio(workload, runtime)
    if ratio is None or ratio <= 0 or not math.isfinite(ratio):
        return None
    return ratio if WORKLOADS[workload].higher_is_better else 1 / ratio


def ratio_text(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}x"
    return f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def tick_text(x: float) -> str:
    return f"{x:g}x" if x >= 0.125 else f"1/{round(1 / x)}x"


def width_of(text: str, size: float) -> float:
    return len(text) * size * CHAR


def split(results: Results) -> tuple[list[str], list[str], list[str]]:
    """The workloads to draw, the baselines and those without an asyncio median."""
    shown, baselines, no_asyncio = [], [], []
    for w in results.workloads:
        if w.endswith("_baseline"):
            baselines.append(w)
        elif BASELINE not in results.runtimes or not results.cell(w, BASELINE).median:
            no_asyncio.append(w)
        else:
            shown.append(w)
    return shown, baselines, no_asyncio


def groups(results: Results, shown: list[str], label_chars: int) -> list[Group]:
    out = []
    runtimes = [r for r in results.runtimes if r != BASELINE]
    for w in shown:
        workload = WORKLOADS[w]
        base = results.cell(w, BASELINE).median or 0.0
        lines = [w, *textwrap.wrap(workload.unit, label_chars)]
        if not workload.higher_is_better:
            lines += textwrap.wrap("lower is better: inverted", label_chars)
        bars = []
        for r in runtimes:
            cell = results.cell(w, r)
            s = speed(results, w, r)
            if s is None:
                status = "no result" if cell.values else (cell.status or "no result")
                note = "error" if status.startswith("error") else status
                bars.append(Bar(r, None, note, f"{r}, {w}: {status}"))
                continue
            tip = (
                f"{r}, {w}: median {format_value(cell.median or 0.0)} {workload.unit}, "
                f"asyncio {format_value(base)}: {ratio_text(s)} the speed of asyncio"
            )
            bars.append(Bar(r, s, ratio_text(s), tip))
        out.append(Group(w, lines, bars))
    return out


def colours(results: Results) -> dict[str, str]:
    spare = iter(SPARE * len(results.runtimes))
    return {r: COLOURS.get(r) or next(spare) for r in results.runtimes if r != BASELINE}


def title_lines(results: Results) -> tuple[str, list[str]]:
    others = [r for r in results.runtimes if r != BASELINE]
    names = ", ".join(others[:-1]) + " and " + others[-1] if len(others) > 1 else "".join(others)
    title = f"{names or 'Nothing'} vs {BASELINE}: speed relative to {BASELINE}"
    env = results.environment
    date = "date unknown" if results.date is None else results.date.strftime("%Y-%m-%d")
    python = env.get("python", "")
    m = re.match(r"(\S+) \((\w+)", python)
    python = f"{m[2]} {m[1]}" if m else f"Python {python.split(' ')[0] or 'unknown'}"
    reps = f"{results.reps} repetition{'s' * (results.reps != 1)}"
    reps += f"{' of --quick sizes' if results.quick else ''}, medians"
    facts = [date, python, f"git {env.get('git revision', 'unknown')}", reps]
    machine = env.get("machine", "machine unknown").replace(" (nproc)", "")
    return title, [" \u00b7 ".join(facts), machine]


def wrap(text: str, size: float, width: float) -> list[str]:
    return textwrap.wrap(text, max(20, int(width / (size * CHAR))))


class Canvas:
    """SVG elements, in drawing order; numbers rounded to 0.1 px (same input, same bytes)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def text(
        self, x: float, y: float, text: str, size: float, *, tip: str | None = None, **attrs: str
    ) -> None:
        extra = "".join(f" {k.replace('_', '-')}={quoteattr(v)}" for k, v in attrs.items())
        title = "" if tip is None else f"<title>{escape(tip)}</title>"
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size:g}"{extra}>{title}{escape(text)}'
            "</text>"
        )

    def line(self, x1: float, y1: float, x2: float, y2: float, **attrs: str) -> None:
        extra = "".join(f" {k.replace('_', '-')}={quoteattr(v)}" for k, v in attrs.items())
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}"{extra}/>'
        )

    def rect(
        self, x: float, y: float, w: float, h: float, fill: str, *, tip: str | None = None
    ) -> None:
        head = f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{fill}"'
        if tip is None:
            self.parts.append(head + "/>")
        else:
            self.parts.append(f"{head}><title>{escape(tip)}</title></rect>")


class Axis:
    """The log2 scale: from the slowest speed (0.5x at most) at pixel ``left`` to the
    fastest (2x at least) at ``right``, ticks at the powers of two between."""

    def __init__(self, speeds: list[float], left: float, right: float) -> None:
        self.lo = max(-10.0, math.log2(min([0.5, *speeds])))
        self.hi = min(10.0, math.log2(max([2.0, *speeds])))
        self.left, self.right = left, right

    def x(self, speed: float) -> float:
        exp = min(max(math.log2(speed), self.lo), self.hi)
        return self.left + (exp - self.lo) / (self.hi - self.lo) * (self.right - self.left)

    def ticks(self) -> Iterator[tuple[float, bool]]:
        """(speed, labelled) for every power of two; every other one labelled if crowded."""
        exps = range(math.ceil(self.lo), math.floor(self.hi) + 1)
        step = 1 if (self.right - self.left) / (self.hi - self.lo) >= 48 else 2
        for exp in exps:
            yield 2.0**exp, exp % step == 0

    def draw_labels(self, canvas: Canvas, y: float) -> None:
        for s, labelled in self.ticks():
            if labelled:
                canvas.text(self.x(s), y, tick_text(s), 11, fill=MUTED, text_anchor="middle")


def svg(results: Results) -> str:
    """The chart of ``results`` as an SVG document."""
    shown, baselines, no_asyncio = split(results)
    label_width = min(230.0, max([150.0, *(width_of(w, 12.5) + 8 for w in shown)]))
    drawn = groups(results, shown, int(label_width / (10.5 * CHAR)))
    colour = colours(results)
    speeds = [b.speed for g in drawn for b in g.bars if b.speed is not None]
    axis = Axis(speeds, MARGIN + label_width + VALUE_ROOM, WIDTH - MARGIN - VALUE_ROOM)
    # layers, bottom to top: bands (every other workload shaded), grid, marks (the rest)
    bands, grid, marks = Canvas(), Canvas(), Canvas()
    title, subtitles = title_lines(results)
    y = header(marks, title, subtitles, colour)
    axis.draw_labels(marks, y)
    top = y = y + 6
    for i, g in enumerate(drawn):
        label_height = 16 + 13 * (len(g.lines) - 1)
        height = max(len(g.bars) * ROW, label_height) + 12
        if i % 2 == 0:
            bands.rect(MARGIN / 2, y, WIDTH - MARGIN, height, BAND)
        marks.text(MARGIN, y + 18, g.lines[0], 12.5, font_weight="bold", fill=TEXT)
        for j, line in enumerate(g.lines[1:]):
            marks.text(MARGIN, y + 32 + 13 * j, line, 10.5, fill=MUTED)
        row = y + 6 + (height - 12 - len(g.bars) * ROW) / 2
        for b in g.bars:
            draw_bar(marks, axis, b, row + ROW / 2, colour[b.runtime])
            row += ROW
        y += height
    if not drawn:
        nothing = "No workload has an asyncio median."
        marks.text(WIDTH / 2, y + 20, nothing, 13, fill=MUTED, text_anchor="middle")
        y += 30
    for s, _ in axis.ticks():
        grid.line(axis.x(s), top, axis.x(s), y, stroke=GRID, stroke_width="1")
    one = axis.x(1.0)
    grid.line(one, top - 4, one, y + 4, stroke=TEXT, stroke_width="1.5")
    axis.draw_labels(marks, y + 16)
    y += 32
    marks.text(one - 8, y, f"\u2190 slower than {BASELINE}", 11, fill=MUTED, text_anchor="end")
    marks.text(one + 8, y, f"faster than {BASELINE} \u2192", 11, fill=MUTED)
    y = footnotes(marks, y + 10, baselines, no_asyncio)
    height = math.ceil(y + MARGIN)
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" font-family={quoteattr(FONT)}>',
            f"<title>{escape(title)}</title>",
            f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
            *bands.parts,
            *grid.parts,
            *marks.parts,
            "</svg>",
            "",
        ]
    )


def header(c: Canvas, title: str, subtitles: list[str], colour: dict[str, str]) -> float:
    """Draw title, subtitles, explanation and legend; return where the axis labels go."""
    y = MARGIN + 16.0
    c.text(MARGIN, y, title, 17, font_weight="bold", fill=TEXT)
    for line in subtitles:
        y += 18
        c.text(MARGIN, y, line, 12.5, fill=MUTED)
    y += 18
    explanation = (
        f"Each bar is a runtime's speed relative to {BASELINE}, a ratio of medians on a log "
        "scale: right of the line is faster. Higher is better throughout: the runtime's "
        f"median / {BASELINE}'s, as in the table's \u201cvs {BASELINE}\u201d, but inverted "
        f"for workloads whose number is lower-is-better (a time, bytes): {BASELINE}'s / the "
        "runtime's."
    )
    for line in wrap(explanation, 11.5, WIDTH - 2 * MARGIN):
        c.text(MARGIN, y, line, 11.5, fill=MUTED)
        y += 15
    y += 8
    x = float(MARGIN)
    for r, fill in colour.items():
        c.rect(x, y - 10, 14, 11, fill)
        c.text(x + 19, y, r, 12.5, fill=TEXT)
        x += 19 + width_of(r, 12.5) + 18
    c.line(x + 7, y - 12, x + 7, y + 3, stroke=TEXT, stroke_width="2")
    c.text(x + 15, y, f"{BASELINE} = 1x", 12.5, fill=TEXT)
    return y + 24


def draw_bar(c: Canvas, axis: Axis, b: Bar, mid: float, fill: str) -> None:
    """A bar from 1x to its speed, labelled at its end; or its note, right of 1x."""
    one = axis.x(1.0)
    if b.speed is None:
        c.text(one + 5, mid + 4, b.note, 11, tip=b.tip, fill=MUTED, font_style="italic")
        return
    end = axis.x(b.speed)
    c.rect(min(one, end), mid - BAR / 2, max(abs(end - one), 1.0), BAR, fill, tip=b.tip)
    right = b.speed >= 0.995  # "1.00x" goes right of the line, even a hair below 1
    anchor = "start" if right else "end"
    c.text(end + (5 if right else -5), mid + 4, b.note, 11, fill=TEXT, text_anchor=anchor)


def footnotes(c: Canvas, y: float, baselines: list[str], no_asyncio: list[str]) -> float:
    """List the workloads left out; return the bottom of the text."""
    notes = []
    if baselines:
        notes.append(
            "Left out, as they measure no runtime (every runtime runs the same code): "
            f"{', '.join(baselines)}."
        )
    if no_asyncio:
        notes.append(f"Left out, without an {BASELINE} median: {', '.join(no_asyncio)}.")
    for note in notes:
        for line in wrap(note, 11, WIDTH - 2 * MARGIN):
            y += 15
            c.text(MARGIN, y, line, 11, fill=MUTED)
    return y

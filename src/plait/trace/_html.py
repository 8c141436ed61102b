# ruff: noqa: E501  (the page's script is kept as written, lines and all)
"""The self-contained HTML timeline page of ``Tracer.write_html``. Layer L7.

One file: the data is inlined as JSON (``__DATA__``) and drawn on a canvas by the
script below; no network, no library. A row per task (in the order they were spawned),
the loop's I/O waits and the jobs below them. The canvas is the size of the window and
shows the rows scrolled into view (a program with thousands of tasks would need a canvas
taller than a browser draws): the wheel scrolls the rows when they do not fit, and zooms
around the pointer when they do, or with Ctrl (a trackpad's pinch); + and - zoom too;
dragging pans; hovering shows what is under the pointer.
"""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
  body { margin: 0; font: 12px system-ui, sans-serif; background: #fff; color: #222; }
  header { padding: 6px 10px; border-bottom: 1px solid #ddd; }
  header b { margin-right: 12px; }
  #view { position: relative; overflow-y: auto; height: calc(100vh - 31px); }
  canvas { display: block; cursor: grab; position: sticky; top: 0; }
  #tip { position: absolute; pointer-events: none; background: #222; color: #fff;
         padding: 4px 6px; border-radius: 3px; white-space: pre; display: none; }
</style>
</head>
<body>
<header><b>__TITLE__</b><span id="info"></span></header>
<div id="view"><canvas id="timeline"></canvas><div id="spacer"></div><div id="tip"></div></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const canvas = document.getElementById("timeline");
const view = document.getElementById("view");
const spacer = document.getElementById("spacer");
const tip = document.getElementById("tip");
const ctx = canvas.getContext("2d");
const ROW = 18, LABEL = 220, TOP = 22;
const rows = data.rows.map(r => ({label: r.name + " #" + r.id, kind: "task", id: r.id}));
const ioRow = rows.length;
rows.push({label: "loop: waiting for I/O", kind: "io"});
const jobRow = {};
for (const job of data.jobs) {
  const key = job[0];
  if (!(key in jobRow)) { jobRow[key] = rows.length; rows.push({label: "jobs: " + key, kind: "job"}); }
}
const names = {};
for (const r of data.rows) names[r.id] = r.name + " #" + r.id;
// Per row, its boxes: [start, duration, detail], for drawing and hovering.
const boxes = rows.map(() => []);
for (const [row, t, d, waker] of data.steps) boxes[row].push([t, d, waker]);
for (const [t, d] of data.io) boxes[ioRow].push([t, d, null]);
for (const job of data.jobs) boxes[jobRow[job[0]]].push([job[3], job[4], job]);
const COLOR = {task: "#3b7dd8", io: "#bbb", job: "#e08a2c"};
let scrolled = 0;  // the scrolled-off height: rows above it are not drawn
let start = 0, span = Math.max(data.end, 1);
document.getElementById("info").textContent =
  data.rows.length + " tasks, " + data.steps.length + " steps, " +
  (data.end / 1000).toFixed(3) + " ms   (wheel: scroll, or zoom when all rows fit; " +
  "Ctrl+wheel or + and -: zoom; drag: pan)";
const FULL = TOP + rows.length * ROW + 10;
function fits() { return FULL <= view.clientHeight; }
function resize() {
  canvas.width = view.clientWidth;
  canvas.height = Math.min(FULL, Math.max(view.clientHeight, 100));
  spacer.style.height = (FULL - canvas.height) + "px";
  draw();
}
function x(t) { return LABEL + (t - start) / span * (canvas.width - LABEL - 10); }
function fmt(us) { return us >= 1000 ? (us / 1000).toFixed(3) + " ms" : us.toFixed(1) + " us"; }
function draw() {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const first = Math.max(0, Math.floor(scrolled / ROW));
  const last = Math.min(rows.length, Math.ceil((scrolled + canvas.height - TOP) / ROW));
  for (let i = first; i < last; i++) {
    const y = TOP + i * ROW - scrolled;
    if (i % 2) { ctx.fillStyle = "#f6f6f6"; ctx.fillRect(0, y, canvas.width, ROW); }
    ctx.fillStyle = "#222";
    ctx.fillText(rows[i].label.slice(0, 34), 4, y + 13);
    ctx.fillStyle = COLOR[rows[i].kind];
    for (const [t, d] of boxes[i]) {
      const x0 = x(t), x1 = x(t + d);
      if (x1 < LABEL || x0 > canvas.width) continue;
      ctx.fillRect(Math.max(x0, LABEL), y + 3, Math.max(x1 - Math.max(x0, LABEL), 1), ROW - 6);
    }
  }
  ctx.clearRect(0, 0, canvas.width, TOP - 1);  // the time axis, over the rows
  ctx.fillStyle = "#666";
  for (let i = 0; i <= 10; i++) {
    const t = start + span * i / 10;
    const px = x(t);
    ctx.fillRect(px, TOP - 4, 1, 4);
    ctx.fillText(fmt(t), px + 2, TOP - 8);
  }
}
function hit(mx, my) {
  const row = Math.floor((my + scrolled - TOP) / ROW);
  const t = start + (mx - LABEL) / (canvas.width - LABEL - 10) * span;
  const slack = span / canvas.width * 2;
  if (my < TOP || row < 0 || row >= rows.length || mx < LABEL) return null;
  for (const [s, d, detail] of boxes[row]) {
    if (t < s - slack || t > s + d + slack) continue;
    if (rows[row].kind === "task") {
      const by = detail === 0 ? "the loop (timer, I/O, thread, callback)"
               : detail === rows[row].id ? "itself (a checkpoint)" : names[detail] || ("#" + detail);
      return rows[row].label + "\nstep at " + fmt(s) + ", " + fmt(d) + "\nmade runnable by " + by;
    }
    if (rows[row].kind === "io") return "waiting for I/O at " + fmt(s) + ", " + fmt(d);
    const job = detail;
    return job[0] + ": " + job[1] + "\nfor " + (names[job[2]] || "no task") + "\nat " + fmt(job[3]) + ", " + fmt(job[4]);
  }
  return null;
}
function zoom(at, factor) {
  span = Math.max(span * factor, 1);
  start = at - (at - start) * factor;
  draw();
}
let drag = null;
canvas.addEventListener("mousedown", e => { drag = {x: e.offsetX, start: start}; canvas.style.cursor = "grabbing"; });
window.addEventListener("mouseup", () => { drag = null; canvas.style.cursor = "grab"; });
canvas.addEventListener("mousemove", e => {
  if (drag) {
    start = drag.start - (e.offsetX - drag.x) / (canvas.width - LABEL - 10) * span;
    draw();
  }
  const text = hit(e.offsetX, e.offsetY);
  tip.style.display = text ? "block" : "none";
  if (text) {
    tip.textContent = text;
    tip.style.left = (e.offsetX + 12) + "px";
    tip.style.top = (scrolled + e.offsetY + 12) + "px";
  }
});
canvas.addEventListener("wheel", e => {
  if (!e.ctrlKey && !fits()) return;  // the view scrolls the rows
  e.preventDefault();
  zoom(start + (e.offsetX - LABEL) / (canvas.width - LABEL - 10) * span, e.deltaY > 0 ? 1.25 : 0.8);
}, {passive: false});
window.addEventListener("keydown", e => {
  if (e.key === "+" || e.key === "=") zoom(start + span / 2, 0.8);
  else if (e.key === "-") zoom(start + span / 2, 1.25);
});
view.addEventListener("scroll", () => { scrolled = view.scrollTop; draw(); });
window.addEventListener("resize", resize);
resize();
document.body.dataset.rendered = String(rows.length);
</script>
</body>
</html>
"""

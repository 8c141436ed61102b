# ruff: noqa: E501  (the page's script is kept as written, lines and all)
"""The self-contained HTML timeline page of ``Tracer.write_html``. Layer L7.

One file: the data is inlined as JSON (``__DATA__``) and drawn on a canvas by the
script below; no network, no library. A row per task (in the order they were spawned),
the loop's I/O waits and the jobs below them; the wheel zooms around the pointer,
dragging pans, hovering shows what is under the pointer.
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
  #view { position: relative; }
  canvas { display: block; cursor: grab; }
  #tip { position: absolute; pointer-events: none; background: #222; color: #fff;
         padding: 4px 6px; border-radius: 3px; white-space: pre; display: none; }
</style>
</head>
<body>
<header><b>__TITLE__</b><span id="info"></span></header>
<div id="view"><canvas id="timeline"></canvas><div id="tip"></div></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const canvas = document.getElementById("timeline");
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
let start = 0, span = Math.max(data.end, 1);
document.getElementById("info").textContent =
  data.rows.length + " tasks, " + data.steps.length + " steps, " +
  (data.end / 1000).toFixed(3) + " ms";
function resize() {
  canvas.width = window.innerWidth;
  canvas.height = TOP + rows.length * ROW + 10;
  draw();
}
function x(t) { return LABEL + (t - start) / span * (canvas.width - LABEL - 10); }
function fmt(us) { return us >= 1000 ? (us / 1000).toFixed(3) + " ms" : us.toFixed(1) + " us"; }
function draw() {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#666";
  for (let i = 0; i <= 10; i++) {
    const t = start + span * i / 10;
    const px = x(t);
    ctx.fillRect(px, TOP - 4, 1, 4);
    ctx.fillText(fmt(t), px + 2, TOP - 8);
  }
  rows.forEach((row, i) => {
    const y = TOP + i * ROW;
    if (i % 2) { ctx.fillStyle = "#f6f6f6"; ctx.fillRect(0, y, canvas.width, ROW); }
    ctx.fillStyle = "#222";
    ctx.fillText(row.label.slice(0, 34), 4, y + 13);
  });
  const box = (row, t, d, color) => {
    const x0 = x(t), x1 = x(t + d);
    if (x1 < LABEL || x0 > canvas.width) return;
    ctx.fillStyle = color;
    ctx.fillRect(Math.max(x0, LABEL), TOP + row * ROW + 3, Math.max(x1 - Math.max(x0, LABEL), 1), ROW - 6);
  };
  for (const [row, t, d] of data.steps) box(row, t, d, "#3b7dd8");
  for (const [t, d] of data.io) box(ioRow, t, d, "#bbb");
  for (const job of data.jobs) box(jobRow[job[0]], job[3], job[4], "#e08a2c");
}
function hit(mx, my) {
  const row = Math.floor((my - TOP) / ROW);
  const t = start + (mx - LABEL) / (canvas.width - LABEL - 10) * span;
  const slack = span / canvas.width * 2;
  if (row < 0 || row >= rows.length || mx < LABEL) return null;
  if (rows[row].kind === "task") {
    for (const [r, s, d, waker] of data.steps) {
      if (r === row && t >= s - slack && t <= s + d + slack) {
        const by = waker === 0 ? "the loop (timer, I/O, thread, callback)"
                 : waker === rows[row].id ? "itself (a checkpoint)" : names[waker] || ("#" + waker);
        return rows[row].label + "\nstep at " + fmt(s) + ", " + fmt(d) + "\nmade runnable by " + by;
      }
    }
  } else if (rows[row].kind === "io") {
    for (const [s, d] of data.io) if (t >= s - slack && t <= s + d + slack)
      return "waiting for I/O at " + fmt(s) + ", " + fmt(d);
  } else {
    for (const job of data.jobs) if (jobRow[job[0]] === row && t >= job[3] - slack && t <= job[3] + job[4] + slack)
      return job[0] + ": " + job[1] + "\nfor " + (names[job[2]] || "no task") + "\nat " + fmt(job[3]) + ", " + fmt(job[4]);
  }
  return null;
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
  if (text) { tip.textContent = text; tip.style.left = (e.offsetX + 12) + "px"; tip.style.top = (e.offsetY + 12) + "px"; }
});
canvas.addEventListener("wheel", e => {
  e.preventDefault();
  const at = start + (e.offsetX - LABEL) / (canvas.width - LABEL - 10) * span;
  const factor = e.deltaY > 0 ? 1.25 : 0.8;
  span = Math.max(span * factor, 1);
  start = at - (at - start) * factor;
  draw();
}, {passive: false});
window.addEventListener("resize", resize);
resize();
document.body.dataset.rendered = String(rows.length);
</script>
</body>
</html>
"""

// The live page of `cmmsf-run stream --view`: Server-Sent Events in, a frame, the latest window, a timeline.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const MODALITIES = ["text", "audio", "video"];
const COLOURS = { text: "#0969da", audio: "#bf8700", video: "#8250df" };
const LIVE_SPAN_S = 120;  // a source without a known length shows its last two minutes
const W = 1000, LEFT = 44, RIGHT = 990;
const SCORE = { top: 10, bottom: 190 }, WORDS = { top: 198, bottom: 232 }, GATES = { top: 240, bottom: 308 };

const state = { description: {}, windows: [], now: 0, ended: false };
const $ = (id) => document.getElementById(id);
// a modality the window did not have gets no gate (the record's gate for it is a masked 0)
const gateOf = (w, m) => ((w.present || {})[m] === false ? undefined : (w.gates || {})[m]);
const fmt = (x, digits = 2) => (x >= 0 ? "+" : "−") + Math.abs(x).toFixed(digits);

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function axisRange() {
  const last = state.windows.length ? state.windows[state.windows.length - 1].end_s : 0;
  const end = Math.max(state.description.duration_s || 0, last, state.now, 1);
  const start = state.description.duration_s ? 0 : Math.max(0, end - LIVE_SPAN_S);
  return [start, end];
}

function drawTimeline() {
  const svg = $("timeline");
  svg.replaceChildren();
  const [t0, t1] = axisRange();
  const x = (t) => LEFT + (RIGHT - LEFT) * (t - t0) / (t1 - t0);
  const ys = (s) => SCORE.top + (SCORE.bottom - SCORE.top) * (3 - s) / 6;
  const yg = (g) => GATES.bottom - (GATES.bottom - GATES.top) * g;
  // the -3..3 scale, the neutral band (|score| < 0.5 reads as neutral) and the gate panel's frame
  svg.append(el("rect", { x: LEFT, y: ys(0.5), width: RIGHT - LEFT, height: ys(-0.5) - ys(0.5), fill: "#eaeef2" }));
  for (let s = -3; s <= 3; s++) {
    svg.append(el("line", { x1: LEFT, x2: RIGHT, y1: ys(s), y2: ys(s), stroke: s ? "#eaeef2" : "#8c959f" }));
    svg.append(el("text", { x: LEFT - 6, y: ys(s) + 4, "text-anchor": "end" }, s > 0 ? "+" + s : String(s)));
  }
  svg.append(el("text", { x: LEFT + 4, y: ys(0.5) - 3 }, "neutral band"));
  svg.append(el("rect", { x: LEFT, y: GATES.top, width: RIGHT - LEFT, height: GATES.bottom - GATES.top,
                          fill: "none", stroke: "#d0d7de" }));
  svg.append(el("text", { x: LEFT - 6, y: GATES.top + 8, "text-anchor": "end" }, "gate 1"));
  svg.append(el("text", { x: LEFT - 6, y: GATES.bottom, "text-anchor": "end" }, "0"));
  svg.append(el("text", { x: LEFT - 6, y: WORDS.top + 20, "text-anchor": "end" }, "words"));
  const step = niceStep(t1 - t0);
  for (let t = Math.ceil(t0 / step) * step; t <= t1 + 1e-9; t += step) {
    svg.append(el("line", { x1: x(t), x2: x(t), y1: GATES.bottom, y2: GATES.bottom + 4, stroke: "#8c959f" }));
    svg.append(el("text", { x: x(t), y: 324, "text-anchor": "middle" }, t.toFixed(step < 1 ? 1 : 0) + " s"));
  }
  state.windows.forEach((w, i) => {
    if (w.end_s < t0) return;
    const latest = i === state.windows.length - 1;
    if (w.score !== undefined) {
      const colour = w.score >= 0 ? "#1a7f37" : "#cf222e";
      const a = x(Math.max(w.start_s, t0)), b = x(w.end_s), y = ys(w.score), opacity = latest ? 1 : 0.45;
      // the window's span at its score, with caps at both ends so that overlapping windows stay apart
      svg.append(el("line", { x1: a, x2: b, y1: y, y2: y, stroke: colour, "stroke-width": latest ? 5 : 3,
                              "stroke-opacity": opacity }));
      for (const end of [a + 1, b - 1]) {
        svg.append(el("line", { x1: end, x2: end, y1: y - 7, y2: y + 7, stroke: colour, "stroke-width": 2,
                                "stroke-opacity": opacity }));
      }
      svg.append(el("text", { x: (a + b) / 2, y: y - 8, "text-anchor": "middle", fill: colour,
                              "fill-opacity": opacity }, fmt(w.score)));
      for (const m of MODALITIES) {
        const g = gateOf(w, m);
        if (g === undefined) continue;
        svg.append(el("line", { x1: x(Math.max(w.start_s, t0)), x2: x(w.end_s), y1: yg(g), y2: yg(g),
                                stroke: COLOURS[m], "stroke-width": 2, "stroke-opacity": latest ? 1 : 0.5 }));
      }
    } else {
      svg.append(el("text", { x: x(Math.max(w.start_s, t0)), y: ys(0) - 4, fill: "#cf222e" }, "error"));
    }
  });
  // recognised words at their times; windows overlap, so each window shows the words of its own
  // stretch (up to where the next window starts), the latest one those of its whole span
  const placed = [];
  state.windows.forEach((w, i) => {
    const until = i + 1 < state.windows.length ? state.windows[i + 1].start_s : Infinity;
    for (const word of w.words || []) if (word.start_s >= w.start_s && word.start_s < until) placed.push(word);
  });
  placed.forEach((word, lane) => {
    if (word.end_s < t0) return;
    svg.append(el("text", { x: x(word.start_s), y: WORDS.top + 12 + 14 * (lane % 2), fill: "#1f2328" }, word.text));
  });
  const untimed = state.windows.find((w) => w.transcript_source && w.transcript_source !== "asr" && w.transcript);
  if (!placed.length && untimed) {
    svg.append(el("text", { x: LEFT + 4, y: WORDS.top + 19, fill: "#1f2328" },
                  `transcript (${untimed.transcript_source}, no word times): ${untimed.transcript}`));
  }
  MODALITIES.forEach((m, i) => svg.append(el("text", { x: RIGHT - 150 + 50 * i, y: GATES.top + 12, fill: COLOURS[m] }, m)));
  if (state.now > t0) {
    svg.append(el("line", { x1: x(state.now), x2: x(state.now), y1: SCORE.top, y2: GATES.bottom,
                            stroke: "#24292f", "stroke-dasharray": "3 3" }));
  }
}

function niceStep(span) {
  for (const s of [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600]) if (span / s <= 12) return s;
  return 1200;
}

function showWindow(w) {
  state.windows.push(w);
  $("span").textContent = `${w.start_s.toFixed(2)}–${w.end_s.toFixed(2)} s`;
  if (w.score !== undefined) {
    $("score").textContent = fmt(w.score);
    $("score").className = w.score >= 0 ? "pos" : "neg";
    $("label").textContent = w.label7;
  } else {
    $("score").textContent = "error";
    $("label").textContent = w.error || "";
  }
  for (const row of $("gates").querySelectorAll("tr")) {
    const g = gateOf(w, row.dataset.modality);
    row.querySelector(".value").textContent = g === undefined ? "absent" : g.toFixed(3);
    row.querySelector(".bar div").style.width = g === undefined ? "0" : `${100 * g}%`;
  }
  const absent = Object.entries(w.absent || {}).map(([m, why]) => `${m}: ${why}`);
  $("absent").textContent = absent.length ? "absent: " + absent.join("; ") : "";
  $("words").textContent = w.transcript ? `“${w.transcript}”` : "";
  const row = document.createElement("tr");
  const gates = MODALITIES.map((m) => gateOf(w, m)).map((g) => (g === undefined ? "–" : g.toFixed(3)));
  for (const text of [`${w.start_s.toFixed(2)}–${w.end_s.toFixed(2)}`,
                      w.score !== undefined ? `${fmt(w.score)} ${w.label7}` : `error: ${w.error}`,
                      gates.join(" / "), w.transcript || ""]) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.append(cell);
  }
  row.firstChild.nextSibling.className = w.score >= 0 ? "pos" : "neg";
  $("windows").tBodies[0].prepend(row);
  drawTimeline();
}

function showFrame(f) {
  const image = new Image();
  image.onload = () => {
    const canvas = $("frame");
    if (canvas.width !== image.width || canvas.height !== image.height) {
      canvas.width = image.width;
      canvas.height = image.height;
    }
    const ctx = canvas.getContext("2d");
    ctx.drawImage(image, 0, 0);
    if (f.face) {
      ctx.strokeStyle = "#2da44e";
      ctx.lineWidth = 3;
      ctx.strokeRect(f.face.x * image.width, f.face.y * image.height, f.face.w * image.width, f.face.h * image.height);
    }
    $("frame-note").textContent = `${f.t.toFixed(2)} s · ` + (f.face ? "face box: what the model reads" : "no face in view");
  };
  image.src = f.jpeg;
  const before = state.now;
  state.now = Math.max(state.now, f.t);
  if (Math.floor(state.now) !== Math.floor(before)) drawTimeline();  // the "now" line, once a second
}

function showSummary(s) {
  state.ended = true;
  $("status").textContent = "stream ended";
  $("status").className = "status ended";
  const box = $("summary");
  box.hidden = false;
  box.replaceChildren();
  const line = document.createElement("p");
  line.textContent = `${s.windows} windows over ${s.media_s.toFixed(1)} s of media · processing ${s.busy_s.toFixed(2)} s · ` +
                     `real-time factor ${s.real_time_factor.toFixed(3)}`;
  box.append(line);
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const h of ["stage", "median ms", "p90 ms"]) head.append(Object.assign(document.createElement("th"), { textContent: h }));
  for (const [stage, ms] of Object.entries(s.stage_ms)) {
    const row = table.insertRow();
    for (const text of [stage, ms.p50.toFixed(2), ms.p90.toFixed(2)]) row.insertCell().textContent = text;
  }
  box.append(table);
}

function describe(d) {
  // the first event of every connection: after a reconnect the server sends the whole history again
  Object.assign(state, { description: d, windows: [], now: 0, ended: false });
  $("windows").tBodies[0].replaceChildren();
  $("source").textContent = d.source;
  $("backend").textContent = `${d.backend} · window ${d.window_s} s, hop ${d.hop_s} s`;
  $("status").textContent = "live";
  drawTimeline();
}

const events = new EventSource("/events");
events.addEventListener("hello", (e) => describe(JSON.parse(e.data)));
events.addEventListener("window", (e) => showWindow(JSON.parse(e.data)));
events.addEventListener("frame", (e) => showFrame(JSON.parse(e.data)));
events.addEventListener("summary", (e) => showSummary(JSON.parse(e.data)));
events.onerror = () => {
  if (state.ended) { events.close(); return; }
  $("status").textContent = "connection lost: retrying";
  $("status").className = "status lost";
};

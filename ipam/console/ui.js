// Small DOM helpers. Text always goes in as text nodes (never innerHTML), so nothing the
// service returns (pod names, notes, reasons) can become markup.

import { isFree, paint, stateInfo, takenStates } from "./states.js";

const SVG = "http://www.w3.org/2000/svg";

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

export function pct(part, total) {
  if (!total) return "0%";
  const p = (100 * part) / total;
  // One decimal near the ends, so 0.4% is not "0%" and 99.6% is not "100%".
  return `${(p > 0 && p < 10) || (p > 99 && p < 100) ? p.toFixed(1) : Math.round(p)}%`;
}

export function num(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

export function when(iso) {
  if (!iso) return "–";
  const t = new Date(iso);
  const s = Math.round((Date.now() - t.getTime()) / 1000);
  let rel;
  if (Math.abs(s) < 60) rel = `${s}s ago`;
  else if (Math.abs(s) < 3600) rel = `${Math.round(s / 60)} min ago`;
  else if (Math.abs(s) < 86400) rel = `${(s / 3600).toFixed(1)} h ago`;
  else rel = `${(s / 86400).toFixed(1)} d ago`;
  return el("time", { datetime: iso, title: t.toISOString().replace("T", " ").slice(0, 19) + " UTC" },
    rel);
}

export function stamp(iso) {
  return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) : "–";
}

export function badge(state) {
  return paint(el("span", { class: "badge", title: stateInfo(state).meaning }, stateInfo(state).label),
    state);
}

export function pill(text, kind) {
  return el("span", { class: `pill pill-${kind}` }, text);
}

// A stacked bar: one segment per taken state present on `counts`, then free.
export function usageBar(counts, { compact = false } = {}) {
  const total = counts.total || 0;
  const bar = el("div", { class: compact ? "bar bar-compact" : "bar", role: "img" });
  const parts = [];
  for (const state of takenStates()) {
    const n = counts[state];
    if (typeof n !== "number" || n <= 0) continue;
    const seg = paint(el("span", { class: "seg", title: `${stateInfo(state).label}: ${num(n)}` }), state);
    seg.style.width = `${total ? (100 * n) / total : 0}%`;
    bar.append(seg);
    parts.push(`${stateInfo(state).label} ${num(n)}`);
  }
  const used = counts.used ?? parts.length;
  bar.setAttribute("aria-label", `${pct(used, total)} used: ${parts.join(", ") || "nothing taken"}`);
  return bar;
}

export function usageText(counts) {
  return el("span", { class: "usage-text" },
    el("strong", {}, pct(counts.used, counts.total)), " used ",
    el("span", { class: "muted" }, `${num(counts.used)} / ${num(counts.total)}`));
}

// A small line chart of used addresses over time (null points: unknown, drawn as a gap).
export function sparkline(points, total, { width = 160, height = 34 } = {}) {
  const box = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "spark",
    role: "img" });
  const known = points.filter((p) => p.used !== null);
  if (!points.length) return box;
  // Scaled to the window's peak (not the pool's size), so a pool 1% full still shows its
  // shape; the label and the title carry the numbers.
  const max = Math.max(...known.map((p) => p.used), 1) * 1.15;
  const x = (i) => (points.length === 1 ? width : (i * (width - 2)) / (points.length - 1) + 1);
  const y = (v) => height - 2 - ((height - 4) * v) / max;
  box.append(svg("line", { x1: 0, x2: width, y1: y(0), y2: y(0), class: "spark-axis" }));
  let d = "";
  let area = "";
  let pen = false;
  points.forEach((p, i) => {
    if (p.used === null) {
      pen = false;
      return;
    }
    d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(p.used).toFixed(1)}`;
    pen = true;
  });
  const firstKnown = points.findIndex((p) => p.used !== null);
  if (firstKnown >= 0) {
    area = `M${x(firstKnown).toFixed(1)},${y(0)}`;
    points.forEach((p, i) => {
      if (i >= firstKnown && p.used !== null) area += `L${x(i).toFixed(1)},${y(p.used).toFixed(1)}`;
    });
    area += `L${x(points.length - 1).toFixed(1)},${y(0)}Z`;
    box.append(svg("path", { d: area, class: "spark-area" }));
  }
  box.append(svg("path", { d, class: "spark-line" }));
  const first = known[0];
  const last = known[known.length - 1];
  const label = first && last
    ? `used ${num(first.used)} → ${num(last.used)} (${pct(last.used, total)} now)`
    : "no history";
  box.setAttribute("aria-label", label);
  const title = svg("title", {});
  title.textContent = label;
  box.append(title);
  return box;
}

export function legend() {
  const states = [...takenStates(), ...["free"].filter((s) => isFree(s))];
  return el("div", { class: "legend" }, states.map((s) =>
    el("span", { class: "legend-item", title: stateInfo(s).meaning },
      paint(el("span", { class: "swatch" }), s), stateInfo(s).label)));
}

export function table(headers, rows, { cls = "" } = {}) {
  return el("table", { class: `grid-table ${cls}` },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

export function kv(pairs) {
  return el("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [
    el("dt", {}, k), el("dd", {}, v === null || v === undefined || v === "" ? "–" : v)]));
}

export function notice(kind, ...children) {
  return el("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" },
    ...children);
}

export function errorNotice(err) {
  const where = err.status ? `HTTP ${err.status} ${err.code}: ` : "";
  return notice("error", where, err.message);
}

export function loading(what) {
  return el("div", { class: "loading" }, `Loading ${what}…`);
}

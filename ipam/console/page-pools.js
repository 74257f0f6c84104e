// Pools as a tree (pool -> ranges and node subnets), usage bars, and the trend over a window
// rebuilt by the service from the audit trail.

import { api } from "./api.js";
import { href } from "./session.js";
import {
  clear, el, errorNotice, legend, loading, notice, num, pct, sparkline, usageBar, usageText,
} from "./ui.js";

const WINDOWS = {
  "6h": { hours: 6, points: 25, label: "6 hours" },
  "24h": { hours: 24, points: 25, label: "24 hours" },
  "7d": { hours: 168, points: 43, label: "7 days" },
};

function trendCell(trend, pool) {
  if (!trend) return el("td", { class: "trend muted" }, "–");
  const t = trend.pools.find((p) => p.name === pool.name);
  if (!t) return el("td", { class: "trend muted" }, "–");
  const known = t.points.filter((p) => p.used !== null);
  const delta = known.length ? known[known.length - 1].used - known[0].used : 0;
  const sign = delta > 0 ? "+" : delta < 0 ? "−" : "±";
  return el("td", { class: "trend" }, sparkline(t.points, t.total),
    el("span", { class: `delta ${delta > 0 ? "up" : delta < 0 ? "down" : ""}`,
      title: "change in used addresses over the window" }, `${sign}${num(Math.abs(delta))}`));
}

function poolRows(pool, trend, subnets, open) {
  const id = `pool-${pool.position}`;
  const toggle = el("button", { class: "toggle", "aria-expanded": String(open), "aria-controls": id,
    title: "show ranges and node subnets" }, open ? "▾" : "▸");
  const meta = [pool.subnet !== pool.name ? pool.subnet : null, pool.gateway ? `gw ${pool.gateway}` : null,
    pool.vlan !== null ? `VLAN ${pool.vlan}` : "no VLAN"].filter(Boolean).join(" · ");
  const head = el("tr", { class: "level-0", dataset: { pool: pool.name } },
    el("td", { class: "name" }, toggle,
      el("a", { href: href("addresses", { pool: pool.name }), class: "pool-link",
        title: "open the address grid" }, pool.name)),
    el("td", { class: "muted" }, meta),
    el("td", { class: "barcell" }, usageBar(pool)),
    el("td", { class: "num" }, usageText(pool)),
    trendCell(trend, pool));
  const children = [];
  for (const r of pool.ranges) {
    children.push(el("tr", { class: "level-1", dataset: { parent: id, range: r.range } },
      el("td", { class: "name" }, el("span", { class: "kind" }, "range"), r.range),
      el("td", { class: "muted" }, `${num(r.total)} addresses`),
      el("td", { class: "barcell" }, usageBar(r, { compact: true })),
      el("td", { class: "num" }, usageText(r)),
      el("td", {})));
  }
  const mine = subnets && subnets.items.find((s) => s.pool === pool.name);
  for (const ns of (mine ? mine.node_subnets : pool.node_subnets.map((s) => ({ subnet: s })))) {
    children.push(el("tr", { class: "level-1", dataset: { parent: id, nodeSubnet: ns.subnet } },
      el("td", { class: "name" }, el("span", { class: "kind" }, "node subnet"), ns.subnet),
      el("td", { class: "muted" }, ns.nodes === undefined ? "" :
        `${num(ns.nodes)} node${ns.nodes === 1 ? " routes" : "s route"} this pool`),
      el("td", {}),
      el("td", { class: "num" }, ns.allocated === undefined ? "" :
        el("span", { class: "usage-text" }, el("strong", {}, num(ns.allocated)),
          " allocated on them")),
      el("td", {})));
  }
  if (mine && mine.elsewhere) {
    children.push(el("tr", { class: "level-1", dataset: { parent: id } },
      el("td", { class: "name" }, el("span", { class: "kind warn" }, "elsewhere")),
      el("td", { class: "muted" }, "allocated on nodes in none of these subnets, or unknown"),
      el("td", {}), el("td", { class: "num" }, num(mine.elsewhere)), el("td", {})));
  }
  for (const row of children) row.hidden = !open;
  toggle.addEventListener("click", () => {
    const now = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(now));
    toggle.textContent = now ? "▾" : "▸";
    for (const row of children) row.hidden = !now;
  });
  return [head, ...children];
}

function summary(pools, trend) {
  const sum = (k) => pools.reduce((a, p) => a + p[k], 0);
  const total = sum("total");
  const used = sum("used");
  let change = null;
  if (trend) {
    let first = 0;
    let last = 0;
    let ok = true;
    for (const t of trend.pools) {
      if (t.points[0].used === null) ok = false;
      first += t.points[0].used || 0;
      last += t.points[t.points.length - 1].used || 0;
    }
    change = ok ? last - first : null;
  }
  const card = (label, value, sub, id) => el("div", { class: "stat", id },
    el("div", { class: "stat-label" }, label), el("div", { class: "stat-value" }, value),
    el("div", { class: "stat-sub muted" }, sub));
  return el("div", { class: "stats" },
    card("Pools", num(pools.length), `${num(total)} addresses`, "stat-pools"),
    card("Used", pct(used, total), `${num(used)} of ${num(total)}`, "stat-used"),
    card("Free", num(total - used), pct(total - used, total), "stat-free"),
    card("Change", change === null ? "–" : `${change >= 0 ? "+" : "−"}${num(Math.abs(change))}`,
      trend ? `used addresses, last ${trend.windowLabel}` : "trend unavailable", "stat-change"));
}

export async function renderPools(view, params, { stale }) {
  const win = WINDOWS[params.get("window")] ? params.get("window") : "24h";
  const { hours, points, label } = WINDOWS[win];
  view.append(el("div", { class: "page-head" }, el("h1", {}, "Pools"),
    el("div", { class: "seg-control", role: "group", "aria-label": "trend window" },
      Object.entries(WINDOWS).map(([key, w]) => el("a", {
        href: href("pools", { window: key }), class: key === win ? "active" : "",
        dataset: { window: key } }, w.label)))));
  const body = el("div", {}, loading("pools"));
  view.append(body);
  const [pools, trend, subnets] = await Promise.all([
    api.pools(),
    api.trend(hours, points).catch((err) => ({ error: err })),
    api.nodeSubnets().catch(() => null),
  ]);
  if (stale()) return;
  const notes = [];
  let usable = trend;
  if (trend.error) {
    notes.push(errorNotice(trend.error));
    usable = null;
  } else {
    usable.windowLabel = label;
    if (!trend.complete) {
      notes.push(notice("info", `The audit trail has more than ${num(trend.rows_read)} changes in `
        + `the last ${label}; the trend starts at ${new Date(trend.known_since).toISOString().slice(0, 16).replace("T", " ")} UTC.`));
    }
  }
  if (!pools.items.length) {
    clear(body, notice("info", "No pools are configured. Import galaxy's floatingip-config with ",
      el("code", {}, "ipam pools import FILE"), "."));
    return;
  }
  const rows = pools.items.flatMap((p) => poolRows(p, usable, subnets, pools.items.length <= 8));
  const vlanRows = pools.vlans.map((v) => el("tr", { dataset: { vlan: v.vlan ?? "none" } },
    el("td", {}, v.vlan === null ? "no VLAN" : `VLAN ${v.vlan}`),
    el("td", {}, v.pools.join(", ")),
    el("td", { class: "barcell" }, usageBar(v, { compact: true })),
    el("td", { class: "num" }, usageText(v))));
  clear(body,
    summary(pools.items, usable),
    ...notes,
    el("section", { class: "card" },
      el("div", { class: "card-head" }, el("h2", {}, "Pool tree"), legend()),
      el("table", { class: "grid-table tree", id: "pool-tree" },
        el("thead", {}, el("tr", {}, el("th", {}, "Pool / range / node subnet"), el("th", {}, ""),
          el("th", {}, "Usage"), el("th", {}, "Used"), el("th", {}, `Trend, ${label}`))),
        el("tbody", {}, rows))),
    el("section", { class: "card" },
      el("div", { class: "card-head" }, el("h2", {}, "By VLAN")),
      el("table", { class: "grid-table", id: "vlan-table" },
        el("thead", {}, el("tr", {}, el("th", {}, "VLAN"), el("th", {}, "Pools"),
          el("th", {}, "Usage"), el("th", {}, "Used"))),
        el("tbody", {}, vlanRows))));
}

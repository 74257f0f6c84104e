// The address grid of a pool, coloured by state; an address's holder, actions and history.

import { api } from "./api.js";
import { stateInfo, paint, takenStates } from "./states.js";
import { go, href, isAdmin } from "./session.js";
import {
  badge, clear, el, errorNotice, kv, legend, loading, notice, num, stamp, when,
} from "./ui.js";

const PAGE = 512;
const COLUMNS = 32;
// Cursors of the pages before the current one, per filter (for "previous").
const back = new Map();
let flash = null;

function filterKey(params) {
  return ["pool", "state", "subnet"].map((k) => params.get(k) || "").join("|");
}

function current(params) {
  return Object.fromEntries(["pool", "state", "subnet", "cursor", "ip"]
    .map((k) => [k, params.get(k) || undefined]));
}

function holder(a) {
  if (a.pod_name) return `${a.pod_namespace}/${a.pod_name}`;
  return a.owner || "";
}

function cellTitle(a) {
  const who = holder(a);
  return `${a.address} — ${stateInfo(a.state).label}${who ? ` — ${who}` : ""}`;
}

function grid(items, onPick) {
  const rows = [];
  for (let i = 0; i < items.length; i += COLUMNS) {
    const chunk = items.slice(i, i + COLUMNS);
    rows.push(el("div", { class: "grid-row" },
      el("span", { class: "grid-label" }, chunk[0].address),
      el("div", { class: "cells" }, chunk.map((a) => {
        const cell = paint(el("button", { class: "cell", type: "button", title: cellTitle(a),
          "aria-label": cellTitle(a), dataset: { address: a.address } }), a.state);
        cell.addEventListener("click", () => onPick(a.address, cell));
        return cell;
      }))));
  }
  return el("div", { class: "ip-grid", id: "ip-grid" }, rows);
}

function change(entry) {
  const b = entry.before && entry.before.state;
  const a = entry.after && entry.after.state;
  if (!b && !a) return "–";
  return el("span", { class: "change" }, b ? badge(b) : "–", " → ", a ? badge(a) : "–");
}

async function loadHistory(box, ip, cursor) {
  const page = await api.audit({ address: ip, limit: 50, cursor });
  const entries = page.items.map((e) => el("li", { dataset: { action: e.action } },
    el("div", { class: "h-line" }, el("span", { class: "h-action" }, e.action), change(e),
      el("span", { class: "h-when muted" }, when(e.at))),
    el("div", { class: "h-who muted" }, "by ", el("span", { class: "h-actor" }, e.actor),
      e.pod_name ? ` · pod ${e.pod_namespace}/${e.pod_name}` : e.owner ? ` · ${e.owner}` : ""),
    e.reason ? el("div", { class: "h-reason" }, e.reason) : null));
  let list = box.querySelector("ol");
  if (!list) {
    if (!entries.length) {
      clear(box, el("p", { class: "muted" }, "No change of this address is in the audit trail."));
      return;
    }
    list = el("ol", { class: "history", id: "history" });
    clear(box, list);
  }
  list.append(...entries);
  box.querySelector(".more")?.remove();
  if (page.next_cursor) {
    box.append(el("button", { class: "more", type: "button",
      onclick: () => loadHistory(box, ip, page.next_cursor) }, "Older changes"));
  }
}

function actions(a, params) {
  const admin = isAdmin();
  const out = el("div", { class: "actions", id: "actions" });
  const status = el("div", { class: "action-status" });
  const run = async (button, what, call) => {
    button.disabled = true;
    try {
      await call();
      flash = notice("ok", `${what} ${a.address}.`);
      go("addresses", { ...current(params), ip: a.address });
    } catch (err) {
      clear(status, errorNotice(err));
      button.disabled = !admin;
    }
  };
  if (a.state === "free") {
    const note = el("input", { type: "text", id: "reserve-note", placeholder: "note (why)",
      maxlength: 1000, disabled: !admin });
    const button = el("button", { type: "button", class: "primary", id: "reserve",
      disabled: !admin }, "Reserve");
    button.addEventListener("click", () => run(button, "Reserved",
      () => api.reserve(a.address, note.value.trim())));
    out.append(el("div", { class: "action-row" }, note, button));
  } else {
    const reason = el("input", { type: "text", id: "release-reason", placeholder: "reason",
      maxlength: 1000, disabled: !admin });
    const forced = a.state === "allocated";
    const force = forced ? el("input", { type: "checkbox", id: "release-force", disabled: !admin })
      : null;
    const button = el("button", { type: "button", class: forced ? "danger" : "primary",
      id: "release", disabled: !admin }, "Release");
    button.addEventListener("click", () => run(button, "Released",
      () => api.release(a.address, reason.value.trim(), force ? force.checked : false)));
    out.append(el("div", { class: "action-row" }, reason, button));
    if (force) {
      out.append(el("label", { class: "check" }, force,
        " a pod holds it: release anyway (the pod keeps using it until it restarts)"));
    }
  }
  if (!admin) {
    out.append(el("p", { class: "muted small", id: "admin-only" },
      "Reserving and releasing needs an admin token."));
  }
  out.append(status);
  return out;
}

async function detail(panel, ip, params) {
  clear(panel, loading(ip));
  const a = await api.address(ip);
  const facts = kv([
    ["Pool", el("a", { href: href("addresses", { pool: a.pool }) }, a.pool)],
    ["Network", `/${a.prefix_length}${a.gateway ? ` via ${a.gateway}` : ""}${a.vlan !== null ? ` · VLAN ${a.vlan}` : ""}`],
    [a.state === "allocated" ? "Pod" : "Last pod", a.pod_name ? `${a.pod_namespace}/${a.pod_name}` : null],
    ["Pod UID", a.pod_uid ? el("code", {}, a.pod_uid) : null],
    ["Node", a.node],
    ["Owner", a.owner ? el("a", { href: href("workloads", { search: a.owner.replace(/\/\d+$/, "") }) },
      a.owner) : null],
    ["Policy", a.policy],
    ["Note", a.note],
    ["Allocated", a.allocated_at ? stamp(a.allocated_at) : null],
    ["Kept since", a.kept_since ? stamp(a.kept_since) : null],
    ["Quarantined until", a.quarantined_until ? stamp(a.quarantined_until) : null],
    ["Updated", a.updated_at ? stamp(a.updated_at) : null],
  ]);
  const hist = el("div", { class: "history-box" }, loading("history"));
  clear(panel,
    el("div", { class: "detail-head" }, el("h2", { id: "detail-address" }, a.address), badge(a.state)),
    el("p", { class: "muted small" }, stateInfo(a.state).meaning),
    flash, facts, actions(a, params),
    el("h3", {}, "History"), hist);
  flash = null;
  await loadHistory(hist, a.address);
}

export async function renderAddresses(view, params, { stale }) {
  const pools = await api.pools();
  if (stale()) return;
  if (!pools.items.length) {
    view.append(el("h1", {}, "Addresses"), notice("info", "No pools are configured."));
    return;
  }
  const q = current(params);
  if (!q.pool || !pools.items.some((p) => p.name === q.pool)) q.pool = pools.items[0].name;
  const key = filterKey(new URLSearchParams({ pool: q.pool, state: q.state || "", subnet: q.subnet || "" }));
  const stack = back.get(key) || [];
  if (!q.cursor) stack.length = 0;
  back.set(key, stack);

  const poolSel = el("select", { id: "pool-select", "aria-label": "pool" },
    pools.items.map((p) => el("option", { value: p.name, selected: p.name === q.pool }, p.name)));
  const stateSel = el("select", { id: "state-select", "aria-label": "state" },
    el("option", { value: "" }, "any state"),
    ["free", ...takenStates()].map((s) =>
      el("option", { value: s, selected: s === q.state }, stateInfo(s).label)));
  const subnet = el("input", { type: "text", id: "subnet", placeholder: "subnet, e.g. 10.0.1.0/24",
    value: q.subnet || "", size: 22 });
  const jump = el("input", { type: "text", id: "jump", placeholder: "go to address", size: 18 });
  const filters = el("form", { class: "filters", id: "filters" }, poolSel, stateSel, subnet,
    el("button", { type: "submit" }, "Show"), el("span", { class: "spacer" }), jump,
    el("button", { type: "button", id: "jump-go" }, "Go"));
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go("addresses", { pool: poolSel.value, state: stateSel.value, subnet: subnet.value.trim() });
  });
  poolSel.addEventListener("change", () => go("addresses", { pool: poolSel.value }));
  stateSel.addEventListener("change", () => go("addresses", { ...q, cursor: undefined, ip: undefined, state: stateSel.value }));
  const jumpTo = async () => {
    const ip = jump.value.trim();
    if (!ip) return;
    try {
      const a = await api.address(ip);
      const v4 = !a.address.includes(":");
      const base = v4 ? a.address.split(".").slice(0, 3).join(".") + ".0/24" : `${a.address}/120`;
      go("addresses", { pool: a.pool, subnet: base, ip: a.address });
    } catch (err) {
      clear(panel, errorNotice(err));
    }
  };
  jump.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      jumpTo();
    }
  });
  filters.querySelector("#jump-go").addEventListener("click", jumpTo);

  const pool = pools.items.find((p) => p.name === q.pool);
  const panel = el("aside", { class: "detail card", id: "detail" },
    el("p", { class: "muted" }, "Click an address to see who holds it and its history."));
  const gridBox = el("section", { class: "card grid-card" }, loading("addresses"));
  view.append(
    el("div", { class: "page-head" }, el("h1", {}, "Addresses"),
      el("div", { class: "muted" }, pool.name, pool.subnet !== pool.name ? ` · ${pool.subnet}` : "",
        pool.vlan !== null ? ` · VLAN ${pool.vlan}` : "", ` · ${num(pool.used)} of ${num(pool.total)} taken`)),
    filters,
    el("div", { class: "split" }, gridBox, panel));

  const page = await api.addresses({ pool: q.pool, state: q.state, subnet: q.subnet,
    limit: PAGE, cursor: q.cursor });
  if (stale()) return;
  let selected = null;
  const pick = (ip, cell) => {
    selected?.classList.remove("selected");
    selected = cell || gridBox.querySelector(`[data-address="${CSS.escape(ip)}"]`);
    selected?.classList.add("selected");
    const next = new URLSearchParams({ ...Object.fromEntries(Object.entries({ ...q, ip }).filter(([, v]) => v)) });
    window.history.replaceState(null, "", `#/addresses?${next}`);
    detail(panel, ip, new URLSearchParams(next)).catch((err) => clear(panel, errorNotice(err)));
  };
  const prev = el("button", { type: "button", id: "prev", disabled: !stack.length }, "← Previous");
  const next = el("button", { type: "button", id: "next", disabled: !page.next_cursor }, "Next →");
  prev.addEventListener("click", () => {
    const cursor = stack.pop();
    go("addresses", { ...q, ip: undefined, cursor });
  });
  next.addEventListener("click", () => {
    stack.push(q.cursor);
    go("addresses", { ...q, ip: undefined, cursor: page.next_cursor });
  });
  const first = page.items[0];
  const last = page.items[page.items.length - 1];
  clear(gridBox,
    el("div", { class: "card-head" },
      el("h2", {}, page.items.length ? `${first.address} – ${last.address}` : "No addresses"),
      legend()),
    page.items.length ? grid(page.items, pick) :
      el("p", { class: "muted" }, "No address of this pool matches the filter."),
    el("div", { class: "pager" }, prev,
      el("span", { class: "muted" }, `${num(page.items.length)} addresses on this page`), next));
  if (q.ip) pick(q.ip);
}

// Workloads holding fixed addresses, and what their release policy does on delete or
// scale-down (the service puts each event to the release rule the controllers apply).

import { api } from "./api.js";
import { go, href } from "./session.js";
import { badge, clear, el, loading, notice, num, pill, table, when } from "./ui.js";

// Address rows shown per workload before "show all".
const SHOWN = 6;
const KINDS = [["", "any kind"], ["statefulset", "StatefulSets"], ["deployment", "Deployments"],
  ["controller", "other controllers"], ["pool", "named pools"], ["pod", "bare pods"]];

function sizeText(w) {
  if (w.exists === false) return pill("owner deleted", "warn");
  if (w.replicas !== null) return `${num(w.replicas)} replica${w.replicas === 1 ? "" : "s"}`;
  return w.note ? el("span", { class: "muted", title: w.note }, "replicas unknown") : "";
}

function card(w) {
  const addresses = table(["Address", "State", "Pool", "Pod", "Node", ""], w.addresses.map((a) =>
    el("tr", { dataset: { address: a.address } },
      el("td", {}, el("a", { href: href("addresses", { pool: a.pool, ip: a.address }) }, a.address)),
      el("td", {}, badge(a.state)),
      el("td", {}, a.pool),
      el("td", {}, a.pod || el("span", { class: "muted" }, a.ordinal !== null ? `ordinal ${a.ordinal}, no pod` : "no pod")),
      el("td", {}, a.node || "–"),
      el("td", { class: "muted small" }, a.state === "kept" && a.kept_since ? ["kept ", when(a.kept_since)] : ""))),
  { cls: "compact" });
  const addressBox = el("div", {}, addresses);
  const rows = [...addresses.querySelectorAll("tbody tr")];
  if (rows.length > SHOWN + 2) {
    for (const row of rows.slice(SHOWN)) row.hidden = true;
    const more = el("button", { type: "button", class: "link-button more-addresses" },
      `Show all ${num(rows.length)} addresses`);
    more.addEventListener("click", () => {
      for (const row of rows) row.hidden = false;
      more.remove();
    });
    addresses.after(more);
  }
  const outcomes = el("ul", { class: "outcomes" }, w.outcomes.map((o) =>
    el("li", { dataset: { keep: String(o.keep) } },
      pill(o.keep ? "kept" : "freed", o.keep ? "keep" : "free"),
      el("span", { class: "event" }, o.event), el("span", { class: "reason muted" }, o.reason))));
  return el("section", { class: "card workload", dataset: { key: w.key } },
    el("div", { class: "card-head" },
      el("h2", {}, el("span", { class: "kind" }, w.kind_label), " ",
        w.namespace ? `${w.namespace}/${w.name}` : w.name),
      el("div", { class: "meta" },
        w.kind === "pool" ? pill("pool keeps its addresses", "keep") : pill(`policy ${w.policy}`, "policy"),
        " ", sizeText(w), " ", el("span", { class: "muted" },
          `${num(w.addresses.length)} address${w.addresses.length === 1 ? "" : "es"}`))),
    el("div", { class: "workload-body" },
      addressBox,
      el("div", {}, el("h3", {}, "On delete or scale-down"), outcomes)));
}

export async function renderWorkloads(view, params, { stale }) {
  const q = { namespace: params.get("namespace") || "", kind: params.get("kind") || "",
    search: params.get("search") || "" };
  const ns = el("input", { type: "text", id: "wl-namespace", placeholder: "namespace", value: q.namespace });
  const kind = el("select", { id: "wl-kind", "aria-label": "kind" },
    KINDS.map(([v, l]) => el("option", { value: v, selected: v === q.kind }, l)));
  const search = el("input", { type: "text", id: "wl-search", placeholder: "name or owner key",
    value: q.search, size: 24 });
  const form = el("form", { class: "filters" }, ns, kind, search, el("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go("workloads", { namespace: ns.value.trim(), kind: kind.value, search: search.value.trim() });
  });
  const list = el("div", { id: "workloads" }, loading("workloads"));
  view.append(el("div", { class: "page-head" }, el("h1", {}, "Workloads with fixed IPs"),
    el("p", { class: "muted" }, "StatefulSets, Deployments and named pools holding addresses, and what "
      + "their release policy does with them (galaxy's ", el("code", {}, "k8s.v1.cni.galaxy.io/release-policy"),
      ": ", el("code", {}, "never"), ", ", el("code", {}, "immutable"), ").")), form, list);
  const page = await api.workloads({ ...q, limit: 200 });
  if (stale()) return;
  if (!page.items.length) {
    clear(list, notice("info", "No workload holds a fixed address", q.namespace || q.kind || q.search
      ? " matching the filter." : "."));
    return;
  }
  clear(list,
    page.total > page.items.length ? notice("info", `Showing ${page.items.length} of ${page.total} workloads; narrow the filter.`) : null,
    page.items.map(card));
}

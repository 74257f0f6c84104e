// Pods the extender is holding back: this replica's latest filter calls that passed no node.

import { api } from "./api.js";
import { clear, el, loading, notice, num, pill, table, when } from "./ui.js";

let timer = null;

function rows(items) {
  return items.map((r) => el("tr", { dataset: { uid: r.uid, status: r.status } },
    el("td", {}, el("strong", {}, r.pod), el("div", { class: "muted small" }, r.uid)),
    el("td", {}, r.status === "held back" ? pill("held back", "warn") :
      [pill("got an address", "keep"), el("div", { class: "small" }, r.holds.join(", "))]),
    el("td", { class: "num" }, num(r.times)),
    el("td", { class: "nowrap" }, when(r.last_at), el("div", { class: "muted small" }, "since ",
      when(r.first_at))),
    el("td", {}, el("ul", { class: "reasons" },
      r.reasons.map((x) => el("li", {},
        el("span", { class: "count" }, `${num(x.nodes)} node${x.nodes === 1 ? "" : "s"}`),
        el("span", { class: "reason" }, x.reason,
          x.examples.length ? el("span", { class: "examples muted" },
            ` (${x.examples.join(", ")}${x.nodes > x.examples.length ? ", …" : ""})`) : null))),
      r.other_nodes ? el("li", { class: "muted" }, `${num(r.other_nodes)} more nodes, other reasons`) : null))));
}

export async function renderRefusals(view, params, { stale }) {
  if (timer) clearInterval(timer);
  timer = null;
  const auto = el("input", { type: "checkbox", id: "auto-refresh", checked: params.get("auto") === "1" });
  const box = el("div", { id: "refusals" }, loading("refusals"));
  const refresh = async () => {
    const page = await api.refusals({ limit: 100 });
    if (stale()) return;
    const held = page.items.filter((r) => r.status === "held back").length;
    clear(box, page.items.length ? [
      el("p", { class: "muted", id: "refusal-summary" }, `${num(held)} pod${held === 1 ? "" : "s"} held back, `
        + `${num(page.items.length - held)} got an address since; this replica remembers the latest ${num(page.capacity)} pods.`),
      el("section", { class: "card" }, table(["Pod", "Now", "Refused", "Last refused", "Why (latest filter call)"],
        rows(page.items), { cls: "refusals" }))] :
      notice("ok", "No pod was refused by filter on this replica since it started."));
  };
  const button = el("button", { type: "button", id: "refresh", onclick: () => refresh().catch((e) => box.append(notice("error", e.message))) }, "Refresh");
  auto.addEventListener("change", () => {
    if (timer) clearInterval(timer);
    timer = auto.checked ? setInterval(() => (stale() ? clearInterval(timer) : refresh().catch(() => {})), 10000) : null;
  });
  view.append(el("div", { class: "page-head" }, el("h1", {}, "Held back by the extender"),
    el("div", { class: "tools" }, el("label", { class: "check" }, auto, " refresh every 10 s"), button)),
  el("p", { class: "muted" }, "Pods for which the scheduler extender's filter passed no node, with the reasons it gave. "
    + "kube-scheduler keeps them Pending and retries; they leave this list when they get an address."), box);
  await refresh();
  auto.dispatchEvent(new Event("change"));
}

// The reconciler's last report on this replica, and a dry run of `ipam check --repair`.

import { api, ApiError } from "./api.js";
import { clear, el, errorNotice, loading, notice, num, pill, table, when } from "./ui.js";

function findings(list, { dry }) {
  if (!list.length) return notice("ok", "Nothing found: PostgreSQL and the cluster's pods agree.");
  const headers = ["Kind", "Address", "Pod", "Owner", dry ? "--repair would" : "Action", "Detail"];
  return table(headers, list.map((f) => el("tr", { dataset: { kind: f.kind } },
    el("td", {}, pill(f.kind.replaceAll("_", " "), "policy")),
    el("td", {}, f.address || "–"),
    el("td", { class: "nowrap" }, f.pod || "–"),
    el("td", {}, f.owner || "–"),
    el("td", {}, dry ? f.repair : f.action),
    el("td", { class: "reason" }, f.detail || ""))), { cls: dry ? "dry-run" : "last-report" });
}

function summary(r, what) {
  return el("p", { class: "summary" }, el("strong", {}, what), " ", when(r.started_at), ": ",
    `${num(r.rows_seen)} address${r.rows_seen === 1 ? "" : "es"} and ${num(r.pods_seen)} pod${r.pods_seen === 1 ? "" : "s"} `
      + `compared in ${r.duration_seconds.toFixed(2)} s, `,
    `${num(r.findings.length)} finding${r.findings.length === 1 ? "" : "s"}`,
    r.applied ? `, ${num(r.repairs)} repaired` : ", nothing changed",
    r.error ? [" — ", el("span", { class: "error-text" }, `failed: ${r.error}`)] : "");
}

export async function renderReconciler(view, params, { stale }) {
  const last = el("section", { class: "card", id: "last-report" }, loading("the last report"));
  const dry = el("section", { class: "card", id: "dry-run" },
    el("div", { class: "card-head" }, el("h2", {}, "Dry run of ipam check --repair")),
    el("p", { class: "muted" }, "Compares PostgreSQL with the cluster's pods now and lists what a repair would change. "
      + "Nothing is changed."));
  const button = el("button", { type: "button", class: "primary", id: "run-dry-run" }, "Run dry run");
  const out = el("div", { id: "dry-run-result" });
  dry.append(button, out);
  button.addEventListener("click", async () => {
    button.disabled = true;
    clear(out, loading("a reconciler pass (reads every address and lists every pod)"));
    try {
      const r = await api.reconcilerDryRun();
      clear(out, summary(r, "Dry run"), findings(r.findings, { dry: true }));
    } catch (err) {
      clear(out, errorNotice(err));
    } finally {
      button.disabled = false;
    }
  });
  view.append(el("div", { class: "page-head" }, el("h1", {}, "Reconciler")),
    el("p", { class: "muted" }, "The leader compares PostgreSQL with the pods every interval and repairs what leaked "
      + "(pods deleted while nobody watched, reservations never bound, kept addresses past their TTL, "
      + "addresses in use the database does not know)."), last, dry);
  try {
    const r = await api.reconcilerReport();
    if (stale()) return;
    clear(last, el("div", { class: "card-head" }, el("h2", {}, "Last pass on this replica")),
      summary(r, r.applied ? "Repair pass" : "Check"), findings(r.findings, { dry: false }));
  } catch (err) {
    if (stale()) return;
    clear(last, el("div", { class: "card-head" }, el("h2", {}, "Last pass on this replica")),
      err instanceof ApiError && err.status === 404
        ? notice("info", "No reconciler pass has run on this replica yet (it runs on the leader).")
        : errorNotice(err));
  }
}

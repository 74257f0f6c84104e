// The console shell: sign-in with a token, the hash router, the header.

import { api, ApiError, setToken, token } from "./api.js";
import { loadStates } from "./states.js";
import { clear, el, errorNotice, notice } from "./ui.js";
import { renderPools } from "./page-pools.js";
import { renderAddresses } from "./page-addresses.js";
import { renderWorkloads } from "./page-workloads.js";
import { renderRefusals } from "./page-refusals.js";
import { renderReconciler } from "./page-reconciler.js";
import { session } from "./session.js";

const PAGES = {
  pools: renderPools,
  addresses: renderAddresses,
  workloads: renderWorkloads,
  refusals: renderRefusals,
  reconciler: renderReconciler,
};

let generation = 0;

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  const page = PAGES[path] ? path : "pools";
  return { page, params: new URLSearchParams(query) };
}

function header() {
  const who = document.getElementById("who");
  const nav = document.getElementById("nav");
  if (!session.who) {
    nav.hidden = true;
    clear(who);
    return;
  }
  nav.hidden = false;
  const { page } = route();
  for (const a of nav.querySelectorAll("a")) a.classList.toggle("active", a.dataset.page === page);
  const w = session.who;
  clear(who,
    el("span", { class: `role role-${w.role}`, id: "role", title: w.authentication ? "" :
      "the service has no token file: everyone is admin" }, w.role),
    el("span", { class: "who-name", id: "who-name" }, w.name),
    w.authentication ? el("button", { class: "link", id: "sign-out", onclick: signOut }, "Sign out") : null);
}

function signOut() {
  setToken("");
  session.who = null;
  showSignIn();
}

function showSignIn(message) {
  header();
  const input = el("input", { type: "password", id: "token", name: "token", autocomplete: "off",
    placeholder: "bearer token", required: true, spellcheck: "false" });
  const status = el("div", { class: "signin-status" }, message ? notice("error", message) : null);
  const form = el("form", { class: "signin card", id: "signin" },
    el("h1", {}, "Sign in"),
    el("p", { class: "muted" }, "Enter a token from the service's token file. A ",
      el("code", {}, "read"), " token shows everything; an ", el("code", {}, "admin"),
      " token can also reserve and release addresses. The token stays in this browser tab."),
    el("label", { for: "token" }, "Token"), input,
    el("button", { type: "submit", class: "primary", id: "sign-in" }, "Open console"), status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      session.who = await api.whoami(input.value.trim());
      setToken(input.value.trim());
      render();
    } catch (err) {
      clear(status, errorNotice(err));
    }
  });
  clear(document.getElementById("main"), form);
  input.focus();
}

async function render() {
  const mine = ++generation;
  const main = document.getElementById("main");
  if (!session.who) {
    try {
      session.who = await api.whoami();
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        showSignIn(token() ? err.message : "");
        return;
      }
      clear(main, errorNotice(err));
      return;
    }
  }
  header();
  const { page, params } = route();
  const view = el("div", { class: "page", id: `page-${page}` });
  clear(main, view);
  try {
    await PAGES[page](view, params, { stale: () => mine !== generation });
  } catch (err) {
    if (mine !== generation) return;
    if (err instanceof ApiError && err.status === 401) {
      setToken("");
      session.who = null;
      showSignIn(err.message);
      return;
    }
    view.append(errorNotice(err));
  }
}

window.addEventListener("hashchange", render);
loadStates().then(render, (err) => clear(document.getElementById("main"),
  notice("error", `cannot load the console's state table: ${err.message}`)));

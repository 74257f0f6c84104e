// Who is signed in ({name, role, authentication}) and navigation between pages.

export const session = { who: null };

export function isAdmin() {
  return Boolean(session.who && session.who.role === "admin");
}

export function href(page, params = {}) {
  const q = new URLSearchParams(
    Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));
  return `#/${page}${q.toString() ? `?${q}` : ""}`;
}

export function go(page, params = {}) {
  const target = href(page, params);
  if (location.hash === target) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = target;
}

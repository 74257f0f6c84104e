// The REST API, as the CLI uses it, with the token the operator typed (sessionStorage only:
// gone when the tab closes, never sent anywhere but this service).

const TOKEN_KEY = "ipam.token";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// Paths are relative to the console (served at <service>/console/), so the console also
// works behind a proxy that adds a path prefix.
function url(path, query) {
  const u = new URL(`..${path}`, document.baseURI);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") u.searchParams.set(k, String(v));
  }
  return u;
}

export async function request(method, path, { query, body, tokenOverride } = {}) {
  const headers = { Accept: "application/json" };
  const t = tokenOverride !== undefined ? tokenOverride : token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(url(path, query), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit",
    });
  } catch (err) {
    throw new ApiError(0, "unreachable", `the service did not answer (${err.message})`);
  }
  const text = await resp.text();
  let doc = null;
  try {
    doc = text ? JSON.parse(text) : null;
  } catch {
    doc = null;
  }
  if (!resp.ok) {
    const e = (doc && doc.error) || {};
    throw new ApiError(resp.status, e.code || `http_${resp.status}`,
      e.message || `${method} ${path}: HTTP ${resp.status}`, e.details);
  }
  return doc;
}

export const api = {
  whoami: (tokenOverride) => request("GET", "/v1/whoami", { tokenOverride }),
  pools: () => request("GET", "/v1/pools"),
  trend: (hours, points) => request("GET", "/v1/usage/trend", { query: { hours, points } }),
  nodeSubnets: () => request("GET", "/v1/usage/node-subnets"),
  addresses: (query) => request("GET", "/v1/addresses", { query }),
  address: (ip) => request("GET", `/v1/addresses/${encodeURIComponent(ip)}`),
  audit: (query) => request("GET", "/v1/audit", { query }),
  reserve: (ip, note) =>
    request("POST", `/v1/addresses/${encodeURIComponent(ip)}/reserve`, { body: { note: note || null } }),
  release: (ip, reason, force) =>
    request("POST", `/v1/addresses/${encodeURIComponent(ip)}/release`,
      { query: { force: force ? "true" : undefined }, body: { reason: reason || null } }),
  workloads: (query) => request("GET", "/v1/workloads", { query }),
  refusals: (query) => request("GET", "/v1/refusals", { query }),
  reconcilerReport: () => request("GET", "/v1/reconciler/report"),
  reconcilerDryRun: () => request("GET", "/v1/reconciler/dry-run"),
};

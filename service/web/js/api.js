// The one way the pages talk to the server: fetch + JSON + CSRF + readable errors.
//
// Every call goes to /api/v1. Cookie-signed writes carry X-CSRF-Token (read from
// the readable labelloop_csrf cookie). Errors become ApiError with the server's
// `detail` turned into one human sentence; status 0 means "server unreachable".

export const API = "/api/v1";
const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

export class ApiError extends Error {
  constructor(status, message, body = null, headers = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
    this.headers = headers;
  }
  /** True when the route itself does not exist yet (not "your project is missing"). */
  get missingRoute() {
    return (this.status === 404 && this.body && this.body.detail === "Not Found") || this.status === 405;
  }
  get retryable() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

export function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === "labelloop_csrf") return decodeURIComponent(v.join("="));
  }
  return "";
}

/** Turn FastAPI's `detail` (a string or a list of validation errors) into a sentence. */
export function describe(detail, status) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => {
      const where = Array.isArray(d.loc) ? d.loc.filter((x) => x !== "body").join(".") : "";
      return where ? `${where}: ${d.msg}` : d.msg;
    }).join("; ");
  }
  if (detail && typeof detail === "object") return JSON.stringify(detail);
  return `request failed (HTTP ${status})`;
}

/**
 * request("POST", "/projects/1/queue/next", {json, form, headers, signal})
 * -> {status, data, headers}. Throws ApiError for non-2xx and network failures.
 */
export async function request(method, path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  let body;
  if (opts.json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(opts.json);
  } else if (opts.form !== undefined) {
    body = opts.form; // FormData: the browser sets the multipart boundary
  }
  if (!SAFE.has(method)) {
    const tok = csrfToken();
    if (tok) headers.set("X-CSRF-Token", tok);
  }
  headers.set("Accept", "application/json");
  let res;
  try {
    res = await fetch(API + path, { method, headers, body, credentials: "same-origin", signal: opts.signal });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "The server is unreachable; will retry.");
  }
  let data = null;
  const type = res.headers.get("Content-Type") || "";
  if (res.status !== 204) {
    if (opts.raw && res.ok) {
      data = await res.blob();
    } else if (type.includes("json")) {
      try { data = await res.json(); } catch { data = null; }
    } else {
      data = await res.text();
    }
  }
  if (!res.ok) {
    const msg = describe(data && data.detail !== undefined ? data.detail : data, res.status);
    const err = new ApiError(res.status, msg, data, res.headers);
    if (res.status === 401 && !opts.quiet401) {
      window.dispatchEvent(new CustomEvent("labelloop:unauthorized", { detail: msg }));
    }
    throw err;
  }
  return { status: res.status, data, headers: res.headers };
}

export const get = async (path, opts) => (await request("GET", path, opts)).data;
export const post = async (path, json, opts = {}) => (await request("POST", path, { ...opts, json })).data;
export const put = async (path, json, opts = {}) => (await request("PUT", path, { ...opts, json })).data;
export const patch = async (path, json, opts = {}) => (await request("PATCH", path, { ...opts, json })).data;

/** Build a query string from an object, leaving out empty values. */
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") u.set(k, String(v));
  }
  const s = u.toString();
  return s ? `?${s}` : "";
}

/** Lists come as {data, count} or as a bare array; give an array either way. */
export function rows(payload) {
  if (Array.isArray(payload)) return payload;
  if (payload && Array.isArray(payload.data)) return payload.data;
  return [];
}

/** Server datetimes are naive UTC ("2025-01-01T10:00:00"): read them as UTC. */
export function parseTime(s) {
  if (!s) return null;
  const hasZone = /[zZ]|[+-]\d\d:?\d\d$/.test(s);
  return new Date(hasZone ? s : `${s}Z`);
}

export const imageUrl = (itemId) => `${API}/items/${itemId}/image`;
export const thumbUrl = (itemId) => `${API}/items/${itemId}/thumbnail`;

/**
 * Follow a job's progress by Server-Sent Events; falls back to polling.
 * onUpdate(job) per change; resolves with the final job. Returns {done, close}.
 */
export function watchJob(jobId, onUpdate) {
  let closed = false;
  let es = null;
  let timer = null;
  const done = new Promise((resolve) => {
    const finish = (job) => {
      if (closed) return;
      closed = true;
      if (es) es.close();
      clearTimeout(timer);
      resolve(job);
    };
    const terminal = (j) => ["succeeded", "failed", "cancelled"].includes(j.state);
    const poll = async () => {
      if (closed) return;
      try {
        const job = await get(`/jobs/${jobId}`);
        onUpdate(job);
        if (terminal(job)) return finish(job);
      } catch (err) {
        if (err.status === 404) return finish(null);
      }
      timer = setTimeout(poll, 1000);
    };
    if (typeof EventSource === "undefined") return poll();
    es = new EventSource(`${API}/jobs/${jobId}/events`);
    let last = null;
    es.addEventListener("progress", (ev) => {
      try { last = JSON.parse(ev.data); onUpdate(last); } catch { /* keep listening */ }
    });
    es.addEventListener("end", (ev) => {
      let job = last;
      try { const j = JSON.parse(ev.data); if (j && j.id) job = j; } catch { /* use last */ }
      if (job) onUpdate(job);
      finish(job);
    });
    es.onerror = () => { if (es) es.close(); es = null; if (!closed) poll(); };
  });
  return { done, close: () => { closed = true; if (es) es.close(); clearTimeout(timer); } };
}

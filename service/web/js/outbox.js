// Saves that must land exactly once, kept in localStorage until they do.
//
// Each entry is one POST /items/{id}/annotations with a fixed If-Match: the
// item's version when the labeler saw it ("v0" for a new item). A retry after a
// save that did land gets 412; the outbox then reads the item and, when the
// server's annotation equals what was sent, counts the save as landed. A 412
// with different content is a conflict: kept (never dropped) until the labeler
// chooses. Network errors, 5xx and 429 retry with exponential backoff.
//
// Events (outbox.addEventListener): "landed" {entry, etag, already},
// "conflict" {entry}, "blocked" {entry}, "retry" {entry, delay}, "change".
//
// Tabs: each entry belongs to the tab that made it, so two tabs never act on
// one save. A tab holds a Web Lock for its lifetime; entries of a tab that is
// gone (closed, reloaded) are adopted by the next tab that looks.

import { request } from "./api.js";

const KEY = "labelloop.outbox.v1";
const MAX_DELAY = 30000;
const BASE_DELAY = 500;

function load() {
  try { return JSON.parse(localStorage.getItem(KEY) || "[]"); } catch { return []; }
}
function store(list) { localStorage.setItem(KEY, JSON.stringify(list)); }

/** The stored shape of an annotation, for comparing what was sent with what is there. */
export function canonical(d) {
  d = d || {};
  return JSON.stringify({
    labels: [...(d.labels || [])],
    boxes: (d.boxes || []).map((b) => [b.label, ...b.bbox.map(Number)]),
    polygons: (d.polygons || []).map((p) => [p.label, ...p.points.map(Number)]),
  });
}

const newKey = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`);
const TAB = newKey();
const LOCK = "labelloop-tab-";
const ORPHAN_MS = 120000; // without Web Locks: adopt entries untouched this long
if (navigator.locks) navigator.locks.request(LOCK + TAB, () => new Promise(() => {})).catch(() => {});

async function liveTabs() {
  if (!navigator.locks) return null;
  try {
    const q = await navigator.locks.query();
    return new Set(q.held.filter((l) => l.name.startsWith(LOCK)).map((l) => l.name.slice(LOCK.length)));
  } catch { return null; }
}

export class Outbox extends EventTarget {
  constructor(userId) {
    super();
    this.userId = userId;
    this.inFlight = new Set();
    this.timer = null;
    this.stopped = false;
    this.paused = false; // after a 401: wait for sign-in
    this.onOnline = () => this.kick(true);
    window.addEventListener("online", this.onOnline);
    this.onStorage = (ev) => { if (ev.key === KEY) this.emit("change"); };
    window.addEventListener("storage", this.onStorage);
    this.adoptTimer = setInterval(() => this.adopt(), 10000);
  }

  /** Take over this user's entries whose tab is gone. */
  async adopt() {
    const alive = await liveTabs();
    const now = Date.now();
    const list = load();
    let changed = false;
    for (const e of list) {
      if (e.userId !== this.userId || e.tab === TAB) continue;
      const gone = alive ? !alive.has(e.tab) : now - (e.touchedAt || e.createdAt) > ORPHAN_MS;
      if (gone) { e.tab = TAB; e.nextAt = 0; changed = true; }
    }
    if (changed) { store(list); this.emit("change"); this.kick(); }
    return changed;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.adoptTimer);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("storage", this.onStorage);
  }

  emit(type, detail = {}) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  /** This tab's entries for this user (oldest first). */
  entries() { return load().filter((e) => e.userId === this.userId && e.tab === TAB); }
  pending() { return this.entries().filter((e) => e.state === "pending"); }
  conflicts() { return this.entries().filter((e) => e.state === "conflict"); }
  blocked() { return this.entries().filter((e) => e.state === "blocked"); }
  get(key) { return load().find((e) => e.key === key) || null; }

  update(key, fn) {
    const list = load();
    const i = list.findIndex((e) => e.key === key);
    if (i < 0) return null;
    const next = fn(list[i]);
    if (next === null) list.splice(i, 1); else list[i] = next;
    store(list);
    this.emit("change");
    return next;
  }
  drop(key) { this.update(key, () => null); }

  /** Queue a save: {projectId, itemId, fileName, body, ifMatch}; returns the entry. */
  add({ projectId, itemId, fileName, body, ifMatch }) {
    const entry = { key: newKey(), tab: TAB, userId: this.userId, projectId, itemId, fileName, body, ifMatch,
      state: "pending", attempts: 0, nextAt: 0, error: "", createdAt: Date.now(), touchedAt: Date.now() };
    const list = load();
    list.push(entry);
    store(list);
    this.emit("change");
    this.kick();
    return entry;
  }

  /** Send what is due now; schedule the rest. `force` ignores backoff. */
  kick(force = false) {
    if (this.stopped || this.paused) return;
    clearTimeout(this.timer);
    const now = Date.now();
    let soonest = Infinity;
    for (const e of this.pending()) {
      if (this.inFlight.has(e.key)) continue;
      if (force || e.nextAt <= now) this.send(e);
      else soonest = Math.min(soonest, e.nextAt);
    }
    if (soonest < Infinity) this.timer = setTimeout(() => this.kick(), Math.max(0, soonest - now));
  }

  retryNow(key) {
    this.update(key, (e) => ({ ...e, state: "pending", nextAt: 0, error: "" }));
    this.paused = false;
    this.kick(true);
  }

  /** Resolve a conflict by saving "mine" over the current version. */
  overwrite(key) {
    const e = this.get(key);
    if (!e || !e.theirs) return;
    this.update(key, (x) => ({ ...x, state: "pending", ifMatch: x.theirs.etag, attempts: 0, nextAt: 0,
      error: "", body: { ...x.body, lease_id: null }, theirs: null }));
    this.kick(true);
  }

  resume() { this.paused = false; this.kick(true); }

  async send(entry) {
    const key = entry.key;
    this.inFlight.add(key);
    try {
      const res = await request("POST", `/items/${entry.itemId}/annotations`, {
        json: entry.body, headers: { "If-Match": entry.ifMatch }, quiet401: true });
      this.drop(key);
      this.emit("landed", { entry, etag: res.headers.get("ETag"), annotation: res.data, already: false });
    } catch (err) {
      await this.failed(entry, err);
    } finally {
      this.inFlight.delete(key);
      this.kick();
    }
  }

  async failed(entry, err) {
    const key = entry.key;
    if (err.status === 412) {
      let cur;
      try {
        cur = await request("GET", `/items/${entry.itemId}`, { quiet401: true });
      } catch (e2) {
        return this.backoff(entry, e2);
      }
      const item = cur.data;
      const etag = cur.headers.get("ETag") || `"v${item.version}"`;
      if (canonical(item.annotation) === canonical(entry.body)) {
        this.drop(key);
        this.emit("landed", { entry, etag, already: true });
      } else {
        const e = this.update(key, (x) => ({ ...x, state: "conflict", error: err.message,
          theirs: { etag, version: item.version, annotation: item.annotation || {}, provenance: item.provenance,
            width: item.width, height: item.height } }));
        this.emit("conflict", { entry: e });
      }
      return;
    }
    if (err.status === 409 && entry.body.lease_id != null && /lease/i.test(err.message)) {
      // the lease lapsed (and nobody else holds the item): the label itself is still wanted
      this.update(key, (x) => ({ ...x, body: { ...x.body, lease_id: null } }));
      return; // due at once: sent again by kick() after this attempt
    }
    if (err.retryable) return this.backoff(entry, err);
    if (err.status === 401) {
      this.paused = true;
      this.update(key, (x) => ({ ...x, error: "signed out: sign in again to send this save" }));
      this.emit("blocked", { entry, paused: true });
      return;
    }
    const e = this.update(key, (x) => ({ ...x, state: "blocked", error: err.message }));
    this.emit("blocked", { entry: e });
  }

  backoff(entry, err) {
    const e = this.update(entry.key, (x) => {
      const attempts = x.attempts + 1;
      const delay = Math.min(MAX_DELAY, BASE_DELAY * 2 ** (attempts - 1)) * (0.8 + Math.random() * 0.4);
      return { ...x, attempts, nextAt: Date.now() + delay, error: err.message, delay, touchedAt: Date.now() };
    });
    if (!e) return;
    this.emit("retry", { entry: e, delay: e.delay });
  }

  /** Resolves when nothing of this user's is pending (conflicts and blocked ones stay). */
  drained() {
    if (!this.pending().length) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (!this.pending().length) { this.removeEventListener("change", check); resolve(); }
      };
      this.addEventListener("change", check);
      this.kick(true);
    });
  }
}

// Label page: the next leased item, labelled with keys 1-9 / class buttons, boxes
// or polygons; skip, undo, submit; lease heartbeat; saves go through the outbox.

import { ApiError, imageUrl, parseTime, post, request } from "../api.js";
import { conflictView } from "../conflict.js";
import { Editor } from "../editor.js";
import { Outbox } from "../outbox.js";
import { classColor, clear, h, showError, toast, typing } from "../ui.js";

const REASONS = {
  strategy: ["Model asked", "The query strategy picked this image: the model is unsure about it."],
  holdout: ["Hold-out", "A random draw for the hold-out set: label it carefully, it checks the model honestly."],
  audit: ["Audit", "An automatically accepted pre-label drawn for a human check."],
  random: ["Random", "Drawn at random (no model yet, or the random stream)."],
};

export async function render(root, { user, project }) {
  const page = new LabelPage(root, user, project);
  await page.start();
  return () => page.stop();
}

class LabelPage {
  constructor(root, user, project) {
    this.root = root;
    this.user = user;
    this.project = project;
    this.task = project.task;
    this.classes = [...project.classes].sort((a, b) => a.position - b.position);
    this.lease = null; // {lease_id, expires_at, reason, etag, item}
    this.selected = new Set(); // multilabel toggles / multiclass choice
    this.saving = null; // outbox key of the save that blocks this item
    this.undoStack = []; // landed saves of this visit: {itemId, fileName, etag, labels}
    this.heartbeatTimer = null;
    this.stopped = false;
    this.outbox = new Outbox(user.id);
    this.build();
  }

  build() {
    const spatial = this.task === "detection" || this.task === "segmentation";
    this.stageHost = h("div", { class: "stage-host" });
    this.itemInfo = h("div", { class: "item-info" });
    this.classBox = h("div", { class: "class-buttons", role: "group", "aria-label": "Classes" });
    this.toolBox = spatial ? h("div", { class: "tools", role: "group", "aria-label": "Tools" }) : null;
    this.shapeList = spatial ? h("ul", { class: "shape-list", testid: "shape-list" }) : null;
    this.saveStatus = h("div", { class: "save-status", role: "status", "aria-live": "polite", testid: "save-status" });
    this.leaseStatus = h("div", { class: "lease-status muted", testid: "lease-status" });
    this.problems = h("div", { class: "problems", testid: "outbox-problems" });
    this.recent = h("ul", { class: "recent", testid: "recent" });
    this.submitBtn = h("button", { type: "button", class: "primary", testid: "submit", onclick: () => this.submit() },
      "Submit ", h("kbd", {}, "Enter"));
    this.skipBtn = h("button", { type: "button", testid: "skip", onclick: () => this.skip() }, "Skip ", h("kbd", {}, "S"));
    this.undoBtn = h("button", { type: "button", testid: "undo", onclick: () => this.undo(), disabled: true },
      "Undo ", h("kbd", {}, "U"));
    this.main = h("div", { class: "label-main" }, this.stageHost);
    const side = h("aside", { class: "label-side", "aria-label": "Labelling tools" },
      this.itemInfo,
      h("h2", { class: "side-title" }, this.task === "multilabel" ? "Classes (toggle)" : "Class"),
      this.classBox,
      this.toolBox,
      this.shapeList,
      h("div", { class: "actions" }, this.submitBtn, this.skipBtn, this.undoBtn),
      this.saveStatus, this.problems, this.leaseStatus,
      h("details", { class: "help" }, h("summary", {}, "Keyboard"), h("ul", {}, this.helpLines().map((l) => h("li", {}, l)))),
      this.project.instructions ? h("details", { class: "help", open: true }, h("summary", {}, "Instructions"),
        h("p", { class: "instructions" }, this.project.instructions)) : null,
      h("h2", { class: "side-title" }, "Recent"), this.recent);
    this.layout = h("div", { class: "label-layout", testid: "label-page" }, this.main, side);
    this.root.append(this.layout);
    this.editor = new Editor(this.stageHost, {
      task: this.task, classes: this.classes,
      onChange: () => this.renderShapes(),
      onSelect: (_, shape) => { if (shape) this.markClass(shape.label); this.renderShapes(); },
    });
    this.renderClasses();
    this.renderTools();
    this.onKey = (ev) => this.key(ev);
    window.addEventListener("keydown", this.onKey);
    this.outbox.addEventListener("landed", (ev) => this.landed(ev.detail));
    this.outbox.addEventListener("conflict", (ev) => this.conflict(ev.detail.entry));
    this.outbox.addEventListener("blocked", (ev) => this.blocked(ev.detail));
    this.outbox.addEventListener("retry", (ev) => this.retrying(ev.detail));
    this.outbox.addEventListener("change", () => this.renderProblems());
  }

  helpLines() {
    const lines = ["1-9: " + (this.task === "multiclass" ? "label with that class and go on"
      : this.task === "multilabel" ? "toggle that class" : "choose the class (of the selected shape too)")];
    if (this.task === "detection" || this.task === "segmentation") {
      lines.push("B / P: box / polygon tool; drag to draw a box; click points, Enter or double-click closes a polygon",
        "Tab: select next shape; arrows nudge (Shift ×10, Alt resizes); Delete removes; Esc deselects");
    }
    lines.push("Enter: submit · S: skip · U or Ctrl+Z: undo the last save",
      "Wheel or + / -: zoom · 0: fit · Space+drag: pan");
    return lines;
  }

  async start() {
    await this.outbox.adopt();
    this.renderProblems();
    if (this.outbox.pending().length) {
      this.setStatus(`Sending ${this.outbox.pending().length} earlier save(s)…`, "busy");
      this.outbox.kick(true);
      // wait a little for them (they are idempotent, so going on before they land is safe)
      await Promise.race([this.outbox.drained(), new Promise((r) => setTimeout(r, 5000))]);
      if (this.stopped) return;
      this.setStatus("");
    }
    const conflict = this.outbox.conflicts().find((e) => e.projectId === this.project.id);
    if (conflict) { this.conflict(conflict); return; }
    await this.next();
  }

  stop() {
    this.stopped = true;
    clearInterval(this.heartbeatTimer);
    window.removeEventListener("keydown", this.onKey);
    this.outbox.stop();
    this.editor.destroy();
  }

  // ---- the queue -------------------------------------------------------------
  async next() {
    clearInterval(this.heartbeatTimer);
    this.lease = null;
    this.saving = null;
    this.setBusy(true);
    let res;
    try {
      res = await request("POST", `/projects/${this.project.id}/queue/next`);
    } catch (err) {
      this.setBusy(false);
      this.showEmpty(err.status === 0 ? "The server is unreachable." : err.message, true);
      return;
    }
    if (this.stopped) return;
    if (res.status === 204 || !res.data) { this.showEmpty("Nothing left to label right now.", false); return; }
    this.lease = res.data;
    this.show(this.lease.item, this.lease.item.annotation);
    this.setBusy(false);
    this.startHeartbeat();
  }

  showEmpty(message, isError) {
    this.layout.classList.add("empty");
    clear(this.itemInfo);
    clear(this.leaseStatus);
    this.main.replaceChildren(h("div", { class: `empty-queue${isError ? " error" : ""}`, testid: "queue-empty" },
      h("p", {}, message),
      h("button", { type: "button", class: "primary", testid: "check-again", onclick: () => { this.restoreMain(); this.next(); } },
        "Check again")));
  }

  restoreMain() {
    this.layout.classList.remove("empty");
    this.main.replaceChildren(this.stageHost);
  }

  show(item, annotation) {
    this.restoreMain();
    const [title, why] = REASONS[this.lease.reason] || [this.lease.reason, ""];
    clear(this.itemInfo,
      h("div", { class: "item-title" },
        h("span", { class: `reason reason-${this.lease.reason}`, title: why, testid: "reason" }, title),
        h("span", { class: "file-name", title: item.file_name }, item.file_name)),
      h("p", { class: "muted small" }, `#`, h("span", { testid: "item-id" }, String(item.id)),
        ` · ${item.width}×${item.height} · ${why}`));
    this.stageHost.dataset.itemId = String(item.id);
    this.selected = new Set(annotation ? annotation.labels || [] : []);
    this.editor.load(imageUrl(item.id), item.width, item.height, annotation || {});
    this.renderClasses();
    this.renderShapes();
  }

  startHeartbeat() {
    const lease = this.lease;
    const update = (expires) => {
      const t = parseTime(expires);
      this.leaseStatus.textContent = t ? `Reserved for you until ${t.toLocaleTimeString()}` : "";
    };
    update(lease.expires_at);
    const ttl = parseTime(lease.expires_at) - Date.now();
    const every = Math.max(1000, Math.min(60000, ttl / 3 || 60000));
    this.heartbeatTimer = setInterval(async () => {
      if (this.lease !== lease) return;
      try {
        const out = await post(`/leases/${lease.lease_id}/heartbeat`, {}, { quiet401: true });
        update(out.expires_at);
      } catch (err) {
        if (err.status === 404 || err.status === 410) {
          clearInterval(this.heartbeatTimer);
          this.leaseStatus.textContent = "Your reservation of this image lapsed; saving still works unless someone else took it.";
          this.leaseStatus.classList.add("warn");
        }
      }
    }, every);
  }

  // ---- classes and shapes ------------------------------------------------------
  renderClasses() {
    clear(this.classBox);
    const spatial = this.editor && this.editor.spatial;
    this.classes.forEach((c, i) => {
      const active = spatial ? this.editor.currentClass === c.name : this.selected.has(c.name);
      this.classBox.append(h("button", {
        type: "button", class: `class-btn${active ? " active" : ""}`, "aria-pressed": String(active),
        testid: `class-${i + 1}`, dataset: { class: c.name }, onclick: () => this.pick(c.name),
        style: { "--swatch": classColor(c, i) },
      }, i < 9 ? h("kbd", {}, String(i + 1)) : null, h("span", { class: "swatch" }), c.name));
    });
  }

  renderTools() {
    if (!this.toolBox) return;
    const tools = this.task === "segmentation" ? [["polygon", "Polygon", "P"], ["box", "Box", "B"], ["pan", "Pan", "H"]]
      : [["box", "Box", "B"], ["polygon", "Polygon", "P"], ["pan", "Pan", "H"]];
    clear(this.toolBox, tools.map(([t, label, key]) => h("button", {
      type: "button", class: `tool${this.editor.tool === t ? " active" : ""}`, "aria-pressed": String(this.editor.tool === t),
      testid: `tool-${t}`, onclick: () => { this.editor.setTool(t); this.renderTools(); },
    }, label, " ", h("kbd", {}, key))));
  }

  renderShapes() {
    if (!this.shapeList) return;
    const { boxes, polygons } = this.editor.shapes();
    const sel = this.editor.selected;
    const items = [
      ...boxes.map((b, i) => ["box", i, b.label, `box ${b.bbox.map((v) => Math.round(v)).join(", ")}`]),
      ...polygons.map((p, i) => ["polygon", i, p.label, `polygon, ${p.points.length / 2} points`]),
    ];
    clear(this.shapeList, items.length ? items.map(([kind, i, label, text]) => h("li", {
      class: sel && sel.kind === kind && sel.index === i ? "selected" : "" },
    h("button", { type: "button", class: "link", onclick: () => this.editor.select({ kind, index: i }) }, `${label}: ${text}`),
    h("button", { type: "button", class: "icon", "aria-label": `Delete ${label} ${kind}`,
      onclick: () => this.editor.remove({ kind, index: i }) }, "×")))
      : h("li", { class: "muted" }, this.task === "detection" ? "No boxes yet: drag on the image." : "No shapes yet."));
  }

  markClass(name) {
    this.editor.currentClass = name;
    this.renderClasses();
  }

  pick(name) {
    if (!this.lease || this.saving) return;
    if (this.task === "multiclass") {
      this.selected = new Set([name]);
      this.renderClasses();
      this.submit();
    } else if (this.task === "multilabel") {
      if (this.selected.has(name)) this.selected.delete(name); else this.selected.add(name);
      this.renderClasses();
    } else {
      this.editor.setClass(name);
      this.renderClasses();
      this.renderShapes();
    }
  }

  // ---- keyboard ------------------------------------------------------------------
  key(ev) {
    if (typing(ev) || ev.defaultPrevented) return;
    if (document.querySelector("dialog[open]")) return;
    if (this.conflictEl) return;
    const k = ev.key;
    const t = ev.target;
    if ((k === "Enter" || k === " ") && t && t.tagName === "BUTTON" && !t.matches(".class-btn, .tool")) return;
    if ((ev.ctrlKey || ev.metaKey) && k.toLowerCase() === "z") { ev.preventDefault(); this.undo(); return; }
    if (ev.ctrlKey || ev.metaKey) return;
    if (this.editor.handleKey(ev)) { ev.preventDefault(); return; }
    if (/^[1-9]$/.test(k)) {
      const c = this.classes[Number(k) - 1];
      if (c) { ev.preventDefault(); this.pick(c.name); }
      return;
    }
    const lower = k.toLowerCase();
    if (k === "Enter") { ev.preventDefault(); this.submit(); }
    else if (lower === "s") { ev.preventDefault(); this.skip(); }
    else if (lower === "u") { ev.preventDefault(); this.undo(); }
    else if (this.toolBox && ["b", "p", "h"].includes(lower)) {
      this.editor.setTool({ b: "box", p: "polygon", h: "pan" }[lower]);
      this.renderTools();
    }
  }

  // ---- saving ----------------------------------------------------------------------
  body() {
    const b = { labels: [], boxes: [], polygons: [], lease_id: this.lease.lease_id };
    if (this.task === "multiclass" || this.task === "multilabel") {
      b.labels = this.classes.map((c) => c.name).filter((n) => this.selected.has(n));
    } else {
      Object.assign(b, this.editor.shapes());
    }
    return b;
  }

  submit() {
    if (!this.lease || this.saving) return;
    const body = this.body();
    if (this.task === "multiclass" && body.labels.length !== 1) { toast("Pick a class (keys 1-9)."); return; }
    if (this.task === "multilabel" && !body.labels.length) { toast("Toggle at least one class, or skip."); return; }
    const item = this.lease.item;
    const entry = this.outbox.add({ projectId: this.project.id, itemId: item.id, fileName: item.file_name, body,
      ifMatch: this.lease.etag || `"v${item.version}"` });
    this.saving = entry.key;
    this.setBusy(true);
    this.setStatus("Saving…", "busy");
  }

  landed({ entry, etag, already }) {
    if (entry.projectId !== this.project.id) return;
    this.undoStack.push({ itemId: entry.itemId, fileName: entry.fileName, etag, body: entry.body });
    this.undoBtn.disabled = false;
    this.addRecent(entry, already);
    if (entry.key !== this.saving) return; // an earlier save (another visit) landed
    this.setStatus(already ? "Saved (the earlier attempt had landed)." : "Saved.", "ok");
    this.next();
  }

  retrying({ entry, delay }) {
    if (entry.key !== this.saving) { this.renderProblems(); return; }
    this.setStatus(`Save failed (${entry.error}). Retrying in ${Math.ceil(delay / 1000)} s — attempt ${entry.attempts + 1}.`,
      "error", h("button", { type: "button", class: "link", testid: "retry-now", onclick: () => this.outbox.retryNow(entry.key) }, "Retry now"));
  }

  blocked({ entry, paused }) {
    if (paused) {
      this.setStatus("You were signed out: sign in again (in another tab) and press Retry; your save is kept.", "error",
        h("button", { type: "button", class: "link", onclick: () => this.outbox.resume() }, "Retry"));
      return;
    }
    if (entry && entry.key === this.saving) {
      this.setStatus(`Not saved: ${entry.error}`, "error");
      this.saving = null;
      this.setBusy(false);
    }
    this.renderProblems();
  }

  renderProblems() {
    const blocked = this.outbox.blocked().filter((e) => e.projectId === this.project.id);
    const waiting = this.outbox.pending().filter((e) => e.projectId === this.project.id && e.key !== this.saving);
    clear(this.problems,
      waiting.length ? h("p", { class: "muted small" }, `${waiting.length} earlier save(s) waiting to be sent.`) : null,
      blocked.map((e) => h("div", { class: "notice error small", testid: "blocked-save" },
        `${e.fileName}: ${e.error} `,
        h("button", { type: "button", class: "link", onclick: () => this.outbox.retryNow(e.key) }, "Retry"), " ",
        h("button", { type: "button", class: "link", onclick: () => this.outbox.drop(e.key) }, "Discard"))));
  }

  addRecent(entry, already) {
    const what = entry.body.labels.length ? entry.body.labels.join(", ")
      : `${entry.body.boxes.length} boxes, ${entry.body.polygons.length} polygons`;
    this.recent.prepend(h("li", { dataset: { itemId: String(entry.itemId) } },
      h("span", { class: "file-name" }, entry.fileName), " → ", h("strong", {}, what), already ? " (retry)" : ""));
    while (this.recent.children.length > 8) this.recent.lastChild.remove();
  }

  setStatus(text, kind = "", extra = null) {
    clear(this.saveStatus, text, extra ? " " : "", extra);
    this.saveStatus.className = `save-status ${kind}`;
    this.saveStatus.dataset.state = kind || "idle";
  }

  setBusy(busy) {
    this.layout.classList.toggle("busy", busy);
    this.submitBtn.disabled = busy;
    this.skipBtn.disabled = busy;
  }

  async skip() {
    if (!this.lease || this.saving) return;
    const lease = this.lease;
    this.setBusy(true);
    try {
      await post(`/items/${lease.item.id}/skip`, { reason: "" });
      this.setStatus(`Skipped ${lease.item.file_name}.`);
      await this.next();
    } catch (err) {
      this.setBusy(false);
      showError(err, "Skip failed");
    }
  }

  async undo() {
    if (this.undoing) return;
    const last = this.undoStack[this.undoStack.length - 1];
    if (!last) { toast("Nothing to undo in this visit."); return; }
    this.undoing = true;
    try {
      const res = await request("POST", `/items/${last.itemId}/undo`, { headers: { "If-Match": last.etag } });
      this.undoStack.pop();
      this.undoBtn.disabled = !this.undoStack.length;
      const li = this.recent.querySelector(`li[data-item-id="${last.itemId}"]`);
      if (li) li.classList.add("undone");
      this.setStatus(`Undid the label on ${last.fileName}; it goes back to the queue.`, "ok");
      toast(`Undone: ${last.fileName} (now ${res.headers.get("ETag") || "updated"})`, "ok");
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) {
        showError(err, `Cannot undo ${last.fileName}: it changed since your save`);
        this.undoStack.pop();
        this.undoBtn.disabled = !this.undoStack.length;
      } else showError(err, "Undo failed");
    } finally {
      this.undoing = false;
    }
  }

  // ---- conflicts -------------------------------------------------------------------
  conflict(entry) {
    if (!entry || entry.projectId !== this.project.id) return;
    clearInterval(this.heartbeatTimer);
    const size = this.lease ? [this.lease.item.width, this.lease.item.height] : [1, 1];
    const close = () => { this.conflictEl.remove(); this.conflictEl = null; };
    this.conflictEl = conflictView(entry, this.classes, size, {
      keepTheirs: () => { this.outbox.drop(entry.key); close(); this.saving = null; this.next(); },
      useMine: () => {
        close();
        this.saving = entry.key;
        this.setStatus("Saving yours over the current version…", "busy");
        this.outbox.overwrite(entry.key);
      },
    });
    this.setStatus("Conflict: choose a version.", "error");
    this.main.prepend(this.conflictEl);
  }
}

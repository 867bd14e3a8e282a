// Label page: the next leased item, labelled with keys 1-9 / class buttons, boxes
// or polygons; skip, undo, submit; lease heartbeat; saves go through the outbox.

import { ApiError, get, imageUrl, parseTime, post, request } from "../api.js";
import { conflictView } from "../conflict.js";
import { Editor } from "../editor.js";
import { Keymap } from "../keys.js";
import { Outbox } from "../outbox.js";
import { classColor, clear, h, showError, toast } from "../ui.js";

// why the queue served an item (the lease's reason), in words; "strategy" before any model is a
// cold-start pick (service/loop/clusters.py): the model cannot be unsure of anything yet
const REASONS = {
  strategy: ["Model asked", "The query strategy picked this image: the model is unsure about it."],
  coldStart: ["Cold start", "Picked to cover the kinds of images in the project before the first model is trained."],
  picked: ["Picked", "The query strategy picked this image."],
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
    this.hasModel = null; // whether the project has a current model (null: not known yet)
    this.stopped = false;
    this.outbox = new Outbox(user.id);
    this.build();
  }

  build() {
    const spatial = this.task === "detection" || this.task === "segmentation";
    this.keys = this.keymap(spatial);
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
      h("details", { class: "help", testid: "key-help" }, h("summary", {}, "Keyboard"), this.keys.list()),
      this.keys.button(),
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
    this.detachKeys = this.keys.attach();
    this.outbox.addEventListener("landed", (ev) => this.landed(ev.detail));
    this.outbox.addEventListener("conflict", (ev) => this.conflict(ev.detail.entry));
    this.outbox.addEventListener("blocked", (ev) => this.blocked(ev.detail));
    this.outbox.addEventListener("retry", (ev) => this.retrying(ev.detail));
    this.outbox.addEventListener("change", () => this.renderProblems());
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
    this.detachKeys();
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
    if (this.lease.reason === "strategy") await this.checkModel();
    if (this.stopped) return;
    this.show(this.lease.item, this.lease.item.annotation);
    this.setBusy(false);
    this.startHeartbeat();
  }

  /** Whether the project has a current model (asked again until it has one; null: unknown). */
  async checkModel() {
    if (this.hasModel) return true;
    try {
      const versions = await get(`/projects/${this.project.id}/model-versions`);
      this.hasModel = (versions || []).some((v) => v.is_current && v.status === "ready");
    } catch {
      this.hasModel = null;
    }
    return this.hasModel;
  }

  /** [title, why] for the current lease's reason. */
  reason() {
    const r = this.lease.reason;
    const key = r !== "strategy" ? r : this.hasModel ? "strategy" : this.hasModel === false ? "coldStart" : "picked";
    return REASONS[key] || [r, ""];
  }

  showEmpty(message, isError) {
    this.layout.classList.add("empty");
    clear(this.itemInfo);
    clear(this.leaseStatus);
    this.main.replaceChildren(h("div", { class: `empty-queue${isError ? " error" : ""}`, testid: "queue-empty" },
      h("p", {}, message),
      h("button", { type: "button", class: "primary", testid: "check-again", onclick: () => { this.restoreMain(); this.next(); } },
        "Check again ", h("kbd", {}, "R"))));
  }

  restoreMain() {
    this.layout.classList.remove("empty");
    this.main.replaceChildren(this.stageHost);
  }

  show(item, annotation) {
    this.restoreMain();
    const [title, why] = this.reason();
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

  // ---- keyboard: one keymap drives the keys, the `?` overlay and the side panel's list ----
  keymap(spatial) {
    const km = new Keymap("Label", { buttons: ".class-btn, .tool" });
    const free = () => !this.conflictEl; // the conflict view has its own two keys
    const n = Math.min(9, this.classes.length);
    const ed = () => this.editor;
    if (n) {
      km.add({ id: "class", keys: Array.from({ length: n }, (_, i) => String(i + 1)), label: n > 1 ? `1–${n}` : "1",
        when: free,
        text: this.task === "multiclass" ? "label with that class and go on to the next image"
          : this.task === "multilabel" ? "toggle that class"
            : "class for new shapes (and for the selected shape)",
        run: (_, key) => this.pick(this.classes[Number(key) - 1].name) });
    }
    km.add({ id: "submit", keys: ["Enter"], when: free,
      text: spatial ? "submit (while drawing a polygon: close it first)" : "submit",
      run: () => (spatial && ed().hasDraft ? ed().closeDraft() || true : this.submit()) });
    km.add({ id: "skip", keys: ["s"], when: free, text: "skip this image", run: () => this.skip() });
    km.add({ id: "undo", keys: ["u", "Ctrl+z"], when: free, text: "undo your last save", run: () => this.undo() });
    km.add({ id: "again", keys: ["r"], when: free,
      text: "retry a failed save now; with an empty queue, check for work again", run: () => this.retryOrRecheck() });
    km.add({ id: "zoom-in", keys: ["+", "="], repeat: true, when: free, text: "zoom in (or the mouse wheel)",
      run: () => ed().zoomBy(1.25) });
    km.add({ id: "zoom-out", keys: ["-", "_"], repeat: true, when: free, text: "zoom out", run: () => ed().zoomBy(1 / 1.25) });
    km.add({ id: "fit", keys: ["0"], when: free, text: "fit the image", run: () => ed().fit() });
    km.add({ id: "arrows", keys: ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"], label: "← ↑ → ↓",
      optional: ["Shift"], repeat: true, when: free,
      text: spatial ? "nudge the selected shape 1 px (Shift: 10 px); nothing selected: pan the image"
        : "pan the image (Shift: further)",
      run: (ev, key) => this.arrow(ev, key, false) });
    km.add({ id: "pan", keys: ["Space"], label: "Space + drag", repeat: true, when: free,
      text: "pan the image with the mouse (with any tool)", run: () => ed().holdPan() });
    if (spatial) {
      km.add({ id: "resize", keys: ["Alt+ArrowLeft", "Alt+ArrowRight", "Alt+ArrowUp", "Alt+ArrowDown"],
        label: "Alt + ← ↑ → ↓", optional: ["Shift"], repeat: true, when: free,
        text: "resize the selected box from its right and bottom edges (Shift: 10 px)",
        run: (ev, key) => this.arrow(ev, key, true) });
      const tools = this.task === "segmentation" ? [["p", "polygon"], ["b", "box"], ["h", "pan"]]
        : [["b", "box"], ["p", "polygon"], ["h", "pan"]];
      for (const [key, tool] of tools) {
        km.add({ id: `tool-${tool}`, keys: [key], when: free,
          text: { box: "box tool: drag to draw a box", polygon: "polygon tool: click points; Enter, a double click or the first point closes it",
            pan: "pan tool: drag moves the image" }[tool],
          run: () => { ed().setTool(tool); this.renderTools(); } });
      }
      km.add({ id: "next-shape", keys: ["Tab", "Shift+Tab"], when: free, text: "select the next / previous shape",
        run: (ev) => ed().cycle(ev.shiftKey ? -1 : 1) });
      km.add({ id: "delete", keys: ["Delete", "Backspace"], when: free,
        text: "delete the selected shape (Backspace while drawing: remove the last point)",
        run: (_, key) => (key === "Backspace" && ed().hasDraft ? ed().dropPoint() : (ed().selected ? (ed().remove(), true) : false)) });
      km.add({ id: "cancel", keys: ["Escape"], when: free, text: "cancel the polygon being drawn, else deselect",
        run: () => ed().cancel() });
    }
    km.add({ id: "keep-current", keys: ["k"], when: () => !!this.conflictEl,
      text: "conflict view: keep the current version", run: () => this.conflictActions.keepTheirs() });
    km.add({ id: "save-mine", keys: ["m"], when: () => !!this.conflictEl,
      text: "conflict view: save yours over it", run: () => this.conflictActions.useMine() });
    return km;
  }

  arrow(ev, key, resize) {
    const step = ev.shiftKey ? 10 : 1;
    const [dx, dy] = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[key];
    if (this.editor.spatial && this.editor.selected) return this.editor.nudge(dx * step, dy * step, resize);
    if (resize) return false;
    this.editor.panBy(-dx * step * 20, -dy * step * 20); // the image follows the arrow's view direction
    return true;
  }

  retryOrRecheck() {
    if (this.main.querySelector("[data-testid=queue-empty]")) { this.restoreMain(); this.next(); return true; }
    if (this.outbox.paused) { this.outbox.resume(); return true; }
    const entry = this.saving && this.outbox.pending().find((e) => e.key === this.saving);
    if (entry && entry.error) { this.outbox.retryNow(entry.key); return true; }
    const blocked = this.outbox.blocked().find((e) => e.projectId === this.project.id);
    if (blocked) { this.outbox.retryNow(blocked.key); return true; }
    return false;
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
      "error", h("button", { type: "button", class: "link", testid: "retry-now", onclick: () => this.outbox.retryNow(entry.key) }, "Retry now ", h("kbd", {}, "R")));
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
      await request("POST", `/items/${last.itemId}/undo`, { headers: { "If-Match": last.etag } });
      this.undoStack.pop();
      this.undoBtn.disabled = !this.undoStack.length;
      const li = this.recent.querySelector(`li[data-item-id="${last.itemId}"]`);
      if (li) li.classList.add("undone");
      this.setStatus(`Undid the label on ${last.fileName}; it goes back to the queue.`, "ok");
      toast(`Undone: your label on ${last.fileName}.`, "ok");
    } catch (err) {
      if (err instanceof ApiError && err.status === 412) {
        toast(`Cannot undo ${last.fileName}: someone changed it since your save.`, "error");
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
    const close = () => { this.conflictEl.remove(); this.conflictEl = null; this.conflictActions = null; };
    this.conflictActions = {
      keepTheirs: () => { this.outbox.drop(entry.key); close(); this.saving = null; this.next(); },
      useMine: () => {
        close();
        this.saving = entry.key;
        this.setStatus("Saving yours over the current version…", "busy");
        this.outbox.overwrite(entry.key);
      },
    };
    this.conflictEl = conflictView(entry, this.classes, size, this.conflictActions);
    this.setStatus("Conflict: choose a version.", "error");
    this.main.prepend(this.conflictEl);
  }
}

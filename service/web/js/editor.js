// The image stage of the Label page: zoom and pan, boxes and polygons drawn and
// edited with the mouse, nudged with the keyboard. Coordinates are image pixels.
//
//   const ed = new Editor(el, {task, onChange, onSelect});
//   ed.load(url, width, height, {boxes, polygons}); ed.setClass("cat"); ed.shapes()

import { classColor, h, s } from "./ui.js";

const MIN_SIZE = 1; // smallest box side, image pixels
const r2 = (v) => Math.round(v * 100) / 100;

export class Editor {
  constructor(host, { task = "multiclass", classes = [], onChange = () => {}, onSelect = () => {} } = {}) {
    this.task = task;
    this.classes = classes;
    this.onChange = onChange;
    this.onSelect = onSelect;
    this.spatial = task === "detection" || task === "segmentation";
    this.tool = task === "segmentation" ? "polygon" : task === "detection" ? "box" : "pan";
    this.currentClass = classes.length ? classes[0].name : "";
    this.boxes = [];
    this.polygons = [];
    this.selected = null; // {kind: "box"|"polygon", index}
    this.draft = null; // polygon points being drawn
    this.drag = null;
    this.k = 1; this.tx = 0; this.ty = 0;
    this.W = 1; this.H = 1;
    this.spaceDown = false;

    this.img = h("img", { alt: "", draggable: "false", class: "stage-img", testid: "stage-image" });
    // The image moves by CSS transform; the shapes live in an SVG over the whole stage whose
    // group gets the same transform, so strokes and handles keep their screen size.
    this.layer = s("g");
    this.svg = s("svg", { class: "stage-svg", "data-testid": "stage-svg" }, this.layer);
    this.world = h("div", { class: "world" }, this.img);
    this.zoomLabel = h("span", { class: "zoom-label", testid: "zoom-level" }, "100%");
    this.el = h("div", { class: `stage tool-${this.tool}`, tabindex: "0", testid: "stage",
      "aria-label": "Image. Scroll to zoom, drag to pan" + (this.spatial ? ", draw to annotate" : "") },
    this.world, this.svg,
    h("div", { class: "zoom-tools" },
      h("button", { type: "button", title: "Zoom out (-)", "aria-label": "Zoom out", onclick: () => this.zoomBy(1 / 1.25) }, "−"),
      this.zoomLabel,
      h("button", { type: "button", title: "Zoom in (+)", "aria-label": "Zoom in", onclick: () => this.zoomBy(1.25) }, "+"),
      h("button", { type: "button", title: "Fit (0)", "aria-label": "Fit image", onclick: () => this.fit() }, "Fit")));
    host.append(this.el);

    this._listeners = [];
    const on = (target, type, fn, opts) => { target.addEventListener(type, fn, opts); this._listeners.push([target, type, fn, opts]); };
    on(this.el, "wheel", (ev) => this.onWheel(ev), { passive: false });
    on(this.el, "pointerdown", (ev) => this.onDown(ev));
    on(window, "pointermove", (ev) => this.onMove(ev));
    on(window, "pointerup", (ev) => this.onUp(ev));
    on(this.el, "dblclick", (ev) => { if (this.draft) { ev.preventDefault(); this.closeDraft(); } });
    on(window, "keyup", (ev) => { if (ev.key === " ") { this.spaceDown = false; this.el.classList.remove("panning"); } });
    on(window, "resize", () => this.fit());
    this.img.addEventListener("load", () => { this.fit(); this.el.dataset.ready = "1"; });
  }

  destroy() {
    for (const [t, type, fn, opts] of this._listeners) t.removeEventListener(type, fn, opts);
    this.el.remove();
  }

  load(url, width, height, data = {}) {
    this.W = width; this.H = height;
    this.boxes = (data.boxes || []).map((b) => ({ label: b.label, bbox: b.bbox.map(Number) }));
    this.polygons = (data.polygons || []).map((p) => ({ label: p.label, points: p.points.map(Number) }));
    this.selected = null; this.draft = null; this.drag = null;
    delete this.el.dataset.ready; // set again once the image is in and fitted
    this.img.style.width = `${width}px`;
    this.img.style.height = `${height}px`;
    this.img.src = url;
    this.fit();
    this.render();
  }

  /** {boxes, polygons} rounded to 1/100 px. */
  shapes() {
    return {
      boxes: this.boxes.map((b) => ({ label: b.label, bbox: b.bbox.map(r2) })),
      polygons: this.polygons.map((p) => ({ label: p.label, points: p.points.map(r2) })),
    };
  }

  setClasses(classes) { this.classes = classes; this.render(); }

  setClass(name) {
    this.currentClass = name;
    const shape = this.selectedShape();
    if (shape) { shape.label = name; this.changed(); }
  }

  setTool(tool) {
    this.tool = tool;
    this.draft = null;
    this.el.className = `stage tool-${tool}`;
    this.render();
  }

  selectedShape() {
    if (!this.selected) return null;
    const list = this.selected.kind === "box" ? this.boxes : this.polygons;
    return list[this.selected.index] || null;
  }

  select(sel) {
    this.selected = sel;
    const shape = this.selectedShape();
    if (shape) this.currentClass = shape.label;
    this.onSelect(sel, shape);
    this.render();
  }

  remove(sel = this.selected) {
    if (!sel) return;
    (sel.kind === "box" ? this.boxes : this.polygons).splice(sel.index, 1);
    this.selected = null;
    this.onSelect(null, null);
    this.changed();
  }

  changed() { this.render(); this.onChange(this.shapes()); }

  // ---- view -------------------------------------------------------------
  fit() {
    const r = this.el.getBoundingClientRect();
    if (!r.width || !r.height) return;
    const k = Math.min(r.width / this.W, r.height / this.H) * 0.96;
    this.k = k;
    this.tx = (r.width - this.W * k) / 2;
    this.ty = (r.height - this.H * k) / 2;
    this.applyView();
  }

  zoomBy(f, cx, cy) {
    const r = this.el.getBoundingClientRect();
    const mx = cx === undefined ? r.width / 2 : cx;
    const my = cy === undefined ? r.height / 2 : cy;
    const k2 = Math.min(64, Math.max(0.02, this.k * f));
    this.tx = mx - (mx - this.tx) * (k2 / this.k);
    this.ty = my - (my - this.ty) * (k2 / this.k);
    this.k = k2;
    this.applyView();
  }

  applyView() {
    this.world.style.transform = `translate(${this.tx}px, ${this.ty}px) scale(${this.k})`;
    this.layer.setAttribute("transform", `translate(${this.tx} ${this.ty}) scale(${this.k})`);
    this.img.classList.toggle("pixelated", this.k > 3);
    this.zoomLabel.textContent = `${Math.round(this.k * 100)}%`;
    this.render();
  }

  toImage(ev) {
    const r = this.el.getBoundingClientRect();
    return [(ev.clientX - r.left - this.tx) / this.k, (ev.clientY - r.top - this.ty) / this.k];
  }

  clampPt([x, y]) { return [Math.max(0, Math.min(this.W, x)), Math.max(0, Math.min(this.H, y))]; }

  // ---- pointer ------------------------------------------------------------
  onWheel(ev) {
    ev.preventDefault();
    const r = this.el.getBoundingClientRect();
    this.zoomBy(Math.exp(-ev.deltaY * 0.0015), ev.clientX - r.left, ev.clientY - r.top);
  }

  onDown(ev) {
    if (ev.target.closest && ev.target.closest(".zoom-tools")) return;
    this.el.focus({ preventScroll: true });
    const pan = ev.button === 1 || this.spaceDown || this.tool === "pan" || !this.spatial;
    if (pan) {
      this.drag = { mode: "pan", sx: ev.clientX, sy: ev.clientY, tx: this.tx, ty: this.ty };
      this.el.classList.add("panning");
      ev.preventDefault();
      return;
    }
    if (ev.button !== 0) return;
    ev.preventDefault();
    const pt = this.toImage(ev);
    const t = ev.target;
    const handle = t.dataset ? t.dataset.handle : undefined;
    if (handle !== undefined && this.selected) {
      this.drag = { mode: "handle", handle, start: pt, orig: structuredClone(this.selectedShape()) };
      return;
    }
    const kind = t.dataset ? t.dataset.kind : undefined;
    if (kind && !this.draft) {
      const index = Number(t.dataset.index);
      this.select({ kind, index });
      this.drag = { mode: "move", start: pt, orig: structuredClone(this.selectedShape()) };
      return;
    }
    if (this.tool === "box") {
      const p = this.clampPt(pt);
      this.drag = { mode: "draw", start: p, cur: p };
      this.select(null);
    } else if (this.tool === "polygon") {
      const p = this.clampPt(pt);
      if (!this.draft) { this.draft = [p]; this.select(null); return; }
      const [fx, fy] = this.draft[0];
      const near = Math.hypot((fx - p[0]) * this.k, (fy - p[1]) * this.k) < 8;
      if (near && this.draft.length >= 3) this.closeDraft();
      else { this.draft.push(p); this.render(); }
    }
  }

  onMove(ev) {
    if (!this.drag) {
      if (this.draft) { this.hover = this.clampPt(this.toImage(ev)); this.render(); }
      return;
    }
    const d = this.drag;
    if (d.mode === "pan") {
      this.tx = d.tx + ev.clientX - d.sx;
      this.ty = d.ty + ev.clientY - d.sy;
      this.applyView();
      return;
    }
    const pt = this.toImage(ev);
    if (d.mode === "draw") { d.cur = this.clampPt(pt); this.render(); return; }
    const dx = pt[0] - d.start[0], dy = pt[1] - d.start[1];
    const shape = this.selectedShape();
    if (!shape) return;
    if (d.mode === "move") {
      if (this.selected.kind === "box") {
        const [x, y, w, hh] = d.orig.bbox;
        shape.bbox = [Math.max(0, Math.min(this.W - w, x + dx)), Math.max(0, Math.min(this.H - hh, y + dy)), w, hh];
      } else {
        const xs = d.orig.points.filter((_, i) => i % 2 === 0), ys = d.orig.points.filter((_, i) => i % 2 === 1);
        const cdx = Math.max(-Math.min(...xs), Math.min(this.W - Math.max(...xs), dx));
        const cdy = Math.max(-Math.min(...ys), Math.min(this.H - Math.max(...ys), dy));
        shape.points = d.orig.points.map((v, i) => (i % 2 === 0 ? v + cdx : v + cdy));
      }
    } else if (d.mode === "handle") {
      if (this.selected.kind === "box") {
        let [x0, y0, w, hh] = d.orig.bbox;
        let x1 = x0 + w, y1 = y0 + hh;
        const [px, py] = this.clampPt(pt);
        if (d.handle.includes("w")) x0 = px;
        if (d.handle.includes("e")) x1 = px;
        if (d.handle.includes("n")) y0 = py;
        if (d.handle.includes("s")) y1 = py;
        shape.bbox = [Math.min(x0, x1), Math.min(y0, y1), Math.max(MIN_SIZE, Math.abs(x1 - x0)),
          Math.max(MIN_SIZE, Math.abs(y1 - y0))];
      } else {
        const i = Number(d.handle);
        const [px, py] = this.clampPt(pt);
        shape.points[2 * i] = px; shape.points[2 * i + 1] = py;
      }
    }
    this.render();
  }

  onUp() {
    const d = this.drag;
    if (!d) return;
    this.drag = null;
    this.el.classList.remove("panning");
    if (d.mode === "draw") {
      const [x0, y0] = d.start, [x1, y1] = d.cur;
      const w = Math.abs(x1 - x0), hh = Math.abs(y1 - y0);
      if (w >= MIN_SIZE && hh >= MIN_SIZE && this.currentClass) {
        this.boxes.push({ label: this.currentClass, bbox: [Math.min(x0, x1), Math.min(y0, y1), w, hh] });
        this.select({ kind: "box", index: this.boxes.length - 1 });
        this.changed();
      } else this.render();
    } else if (d.mode === "move" || d.mode === "handle") {
      this.changed();
    }
  }

  closeDraft() {
    if (!this.draft || this.draft.length < 3 || !this.currentClass) return false;
    this.polygons.push({ label: this.currentClass, points: this.draft.flat() });
    this.draft = null;
    this.select({ kind: "polygon", index: this.polygons.length - 1 });
    this.changed();
    return true;
  }

  // ---- keyboard (the Label page's keymap calls these) ------------------------------
  get hasDraft() { return !!this.draft; }

  /** Space held: dragging pans whatever the tool (released on keyup). */
  holdPan() { this.spaceDown = true; this.el.classList.add("panning"); }

  /** Move the view by (dx, dy) screen pixels. */
  panBy(dx, dy) { this.tx += dx; this.ty += dy; this.applyView(); }

  /** Esc: drop the polygon being drawn, else deselect; false when neither applied. */
  cancel() {
    if (this.draft) { this.draft = null; this.render(); return true; }
    if (this.selected) { this.select(null); return true; }
    return false;
  }

  /** Backspace while drawing: drop the polygon's last point. */
  dropPoint() {
    if (!this.draft) return false;
    this.draft.pop();
    if (!this.draft.length) this.draft = null;
    this.render();
    return true;
  }

  /** Select the next (step 1) or previous (step -1) shape; false when there are none. */
  cycle(step) {
    const all = [...this.boxes.map((_, i) => ({ kind: "box", index: i })),
      ...this.polygons.map((_, i) => ({ kind: "polygon", index: i }))];
    if (!all.length) return false;
    const cur = this.selected ? all.findIndex((x) => x.kind === this.selected.kind && x.index === this.selected.index) : -1;
    this.select(all[(cur + (step < 0 ? all.length - 1 : 1)) % all.length]);
    return true;
  }

  /** Move the selected shape by (dx, dy) image px, or (resize) grow a box's right/bottom edge. */
  nudge(dx, dy, resize = false) {
    const shape = this.selectedShape();
    if (!shape) return false;
    if (this.selected.kind === "box") {
      const [x, y, w, hh] = shape.bbox;
      shape.bbox = resize
        ? [x, y, Math.max(MIN_SIZE, Math.min(this.W - x, w + dx)), Math.max(MIN_SIZE, Math.min(this.H - y, hh + dy))]
        : [Math.max(0, Math.min(this.W - w, x + dx)), Math.max(0, Math.min(this.H - hh, y + dy)), w, hh];
    } else {
      if (resize) return false;
      shape.points = shape.points.map((v, i) => (i % 2 === 0 ? Math.max(0, Math.min(this.W, v + dx)) : Math.max(0, Math.min(this.H, v + dy))));
    }
    this.changed();
    return true;
  }

  // ---- drawing ---------------------------------------------------------------
  colorOf(label) {
    const i = this.classes.findIndex((c) => c.name === label);
    return classColor(this.classes[i], i < 0 ? 0 : i);
  }

  render() {
    const hs = 8 / this.k; // handle size in image px
    const out = [];
    this.boxes.forEach((b, i) => {
      const [x, y, w, hh] = b.bbox;
      const sel = this.selected && this.selected.kind === "box" && this.selected.index === i;
      const c = this.colorOf(b.label);
      out.push(s("rect", { x, y, width: w, height: hh, class: `shape${sel ? " selected" : ""}`, stroke: c,
        fill: c, "data-kind": "box", "data-index": i, "data-testid": `box-${i}`, "data-label": b.label }));
      out.push(s("text", { x: x + 2 / this.k, y: y + 12 / this.k, class: "shape-label", fill: c,
        "font-size": 11 / this.k }, b.label));
      if (sel) {
        for (const [hx, hy, name] of [[x, y, "nw"], [x + w, y, "ne"], [x, y + hh, "sw"], [x + w, y + hh, "se"]]) {
          out.push(s("rect", { x: hx - hs / 2, y: hy - hs / 2, width: hs, height: hs, class: `handle handle-${name}`,
            "data-handle": name }));
        }
      }
    });
    this.polygons.forEach((p, i) => {
      const sel = this.selected && this.selected.kind === "polygon" && this.selected.index === i;
      const c = this.colorOf(p.label);
      out.push(s("polygon", { points: pairs(p.points).map((q) => q.join(",")).join(" "),
        class: `shape${sel ? " selected" : ""}`, stroke: c, fill: c, "data-kind": "polygon", "data-index": i,
        "data-testid": `polygon-${i}`, "data-label": p.label }));
      if (sel) {
        pairs(p.points).forEach(([x, y], j) => out.push(s("circle", { cx: x, cy: y, r: hs / 2, class: "handle",
          "data-handle": j })));
      }
    });
    if (this.drag && this.drag.mode === "draw") {
      const [x0, y0] = this.drag.start, [x1, y1] = this.drag.cur;
      out.push(s("rect", { x: Math.min(x0, x1), y: Math.min(y0, y1), width: Math.abs(x1 - x0),
        height: Math.abs(y1 - y0), class: "shape drawing", stroke: this.colorOf(this.currentClass) }));
    }
    if (this.draft) {
      const pts = [...this.draft, ...(this.hover ? [this.hover] : [])];
      out.push(s("polyline", { points: pts.map((q) => q.join(",")).join(" "), class: "shape drawing",
        stroke: this.colorOf(this.currentClass) }));
      this.draft.forEach(([x, y], j) => out.push(s("circle", { cx: x, cy: y, r: hs / 2,
        class: j === 0 ? "handle first" : "handle" })));
    }
    this.layer.replaceChildren(...out);
  }
}

function pairs(flat) {
  const out = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
}

/** A static picture of an annotation over its image (for the conflict view, previews). */
export function preview(url, width, height, data, classes, testid) {
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "preview-svg", preserveAspectRatio: "xMidYMid meet" });
  const colorOf = (label) => { const i = classes.findIndex((c) => c.name === label); return classColor(classes[i], Math.max(0, i)); };
  for (const b of data.boxes || []) {
    const [x, y, w, hh] = b.bbox;
    svg.append(s("rect", { x, y, width: w, height: hh, class: "shape", stroke: colorOf(b.label), fill: colorOf(b.label) }));
  }
  for (const p of data.polygons || []) {
    svg.append(s("polygon", { points: pairs(p.points).map((q) => q.join(",")).join(" "), class: "shape",
      stroke: colorOf(p.label), fill: colorOf(p.label) }));
  }
  return h("div", { class: "preview", testid, style: { aspectRatio: `${width} / ${height}` } },
    h("img", { src: url, alt: "" }), svg);
}

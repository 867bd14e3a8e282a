// Small DOM helpers shared by the pages: element builder, toasts, notices.

/**
 * h("button", {class: "primary", onclick: fn, dataset: {testid: "x"}}, "text", child)
 * Attributes starting with "on" become listeners; `dataset`/`style` objects are merged;
 * `false`/`null` attributes are left out; strings become text nodes (never HTML).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style" && typeof v === "object") {
      for (const [sk, sv] of Object.entries(v)) {
        if (sk.startsWith("--")) el.style.setProperty(sk, sv); else el.style[sk] = sv;
      }
    }
    else if (k === "testid") el.dataset.testid = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** SVG element builder (same rules as h, attributes set verbatim). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let toastBox = null;
/** A short message at the bottom right; kind: info | ok | error. */
export function toast(message, kind = "info", ms = 4000) {
  if (!toastBox) {
    toastBox = h("div", { class: "toasts", role: "status", "aria-live": "polite", testid: "toasts" });
    document.body.append(toastBox);
  }
  const t = h("div", { class: `toast ${kind}`, testid: `toast-${kind}` }, message);
  toastBox.append(t);
  setTimeout(() => t.remove(), kind === "error" ? Math.max(ms, 8000) : ms);
  return t;
}

export function showError(err, prefix = "") {
  const msg = err && err.message ? err.message : String(err);
  toast(prefix ? `${prefix}: ${msg}` : msg, "error");
}

/**
 * Follow the <img> elements under `root` until each one is shown: loaded, or failed (a
 * broken image shows its alt text). Calls onChange(shown, total) now and after each image
 * settles; returns a function that stops the calls (for a redraw that replaced the images).
 */
export function watchImages(root, onChange) {
  const imgs = [...root.querySelectorAll("img")];
  let live = true;
  const report = () => { if (live) onChange(imgs.filter((img) => img.complete).length, imgs.length); };
  for (const img of imgs) {
    if (img.complete) continue;
    img.addEventListener("load", report, { once: true });
    img.addEventListener("error", report, { once: true });
  }
  report();
  return () => { live = false; };
}

/** A block that says a feature's server route is not there yet. */
export function notAvailable(what) {
  return h("div", { class: "notice", testid: "not-available" },
    h("strong", {}, `${what} is not available yet.`),
    " This server does not offer it; the page will work once it does.");
}

export function errorBlock(err) {
  return h("div", { class: "notice error", role: "alert", testid: "page-error" },
    err && err.message ? err.message : String(err));
}

export function fmtPct(x, digits = 1) {
  if (x === null || x === undefined || Number.isNaN(Number(x))) return "–";
  return `${(Number(x) * 100).toFixed(digits)}%`;
}

export function fmtNum(x, digits = 3) {
  if (x === null || x === undefined || x === "") return "–";
  const n = Number(x);
  if (Number.isNaN(n)) return String(x);
  return Number.isInteger(n) ? String(n) : n.toFixed(digits);
}

export function fmtTime(d) {
  if (!d) return "–";
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
}

/** A labelled progress bar; returns {el, set(fraction, text)}. */
export function progressBar(testid = "progress") {
  const bar = h("div", { class: "bar-fill" });
  const text = h("span", { class: "bar-text" });
  const el = h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
    testid }, bar, text);
  return {
    el,
    set(f, label = "") {
      const pct = Math.max(0, Math.min(1, Number(f) || 0)) * 100;
      bar.style.width = `${pct}%`;
      el.setAttribute("aria-valuenow", pct.toFixed(0));
      text.textContent = label || `${pct.toFixed(0)}%`;
    },
  };
}

/** True when a key event comes from a text field (so page hotkeys stay out of the way). */
export function typing(ev) {
  const t = ev.target;
  if (!t || !t.tagName) return false;
  const tag = t.tagName.toLowerCase();
  return tag === "textarea" || tag === "select" || t.isContentEditable ||
    (tag === "input" && !["checkbox", "radio", "button", "range"].includes(t.type));
}

/** A stable colour per class (the class's own colour when set). */
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
  "#bfef45", "#469990", "#9a6324", "#800000", "#808000", "#000075", "#a9a9a9"];
export function classColor(cls, index = 0) {
  if (cls && cls.color) return cls.color;
  return PALETTE[index % PALETTE.length];
}

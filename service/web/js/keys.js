// Page keymaps. Each page declares one Keymap (key -> description -> handler); the
// keydown handler, the `?` help overlay and any inline key list are all built from
// it, so what a page lists is exactly what it handles.
//
//   const keys = new Keymap("Pending");
//   keys.add({ id: "confirm-page", keys: ["Enter"], text: "confirm every proposal on this page",
//              run: () => confirmAll() });
//   const detach = keys.attach();          // window keydown; `?` opens the list
//
// A key spec is "[Ctrl+][Alt+][Shift+]KEY", KEY being KeyboardEvent.key ("s", "Enter",
// "ArrowLeft", "Space", "?"); letters match either case (Shift only when written). Cmd
// counts as Ctrl. Shift is ignored for symbols ("?", "+"), which need it on some layouts.
//
// A binding: {id, keys, text, run(ev, key), label?, optional?: ["Shift"], when?(),
// repeat?: true (auto-repeat welcome), fields?: true (also while typing in a field)}.
// run() returns false when the key does not apply right now; the browser then keeps its
// default. Every matched key is announced on window as a `labelloop:key` CustomEvent
// ({page, id, key, used}), which the browser tests listen to.

import { h, showError, typing } from "./ui.js";

const SHOW = { ArrowLeft: "←", ArrowRight: "→", ArrowUp: "↑", ArrowDown: "↓", Escape: "Esc", " ": "Space",
  Delete: "Delete", Backspace: "Backspace", PageUp: "Page Up", PageDown: "Page Down" };
const MODS = ["Ctrl", "Alt", "Shift"];

function parse(spec) {
  const parts = spec === "+" ? ["+"] : spec.split("+");
  let key = parts.pop();
  if (key === "" && spec.endsWith("++")) key = "+";
  const mods = new Set(parts.filter(Boolean));
  for (const m of mods) if (!MODS.includes(m)) throw new Error(`unknown modifier in key spec ${spec}`);
  if (key === "Space") key = " ";
  if (key.length === 1) key = key.toLowerCase();
  return { spec, key, mods };
}

/** The key and modifiers of a keydown, in the same form as parse(). */
export function eventKey(ev) {
  const raw = ev.key === "Spacebar" ? " " : ev.key || "";
  const letter = /^[a-z]$/i.test(raw);
  const mods = new Set();
  if (ev.ctrlKey || ev.metaKey) mods.add("Ctrl");
  if (ev.altKey) mods.add("Alt");
  if (ev.shiftKey && (letter || raw.length !== 1 || raw === " ")) mods.add("Shift");
  return { key: raw.length === 1 ? raw.toLowerCase() : raw, mods };
}

/** How a key spec is shown: "Ctrl+Z", "←", "Space". */
export function showKey(spec) {
  const { key, mods } = parse(spec);
  const name = SHOW[key] || (key.length === 1 ? key.toUpperCase() : key);
  return [...MODS.filter((m) => mods.has(m)), name].join("+");
}

export class Keymap {
  /**
   * page: the page's name (overlay title, event detail).
   * buttons: a selector of buttons on which Enter/Space still go to the keymap (elsewhere a
   * focused button, link or summary keeps its native Enter/Space).
   */
  constructor(page, { buttons = "" } = {}) {
    this.page = page;
    this.buttons = buttons;
    this.bindings = [];
    this.dialog = null;
    this.onKeydown = (ev) => this.handle(ev);
    this.help = this.norm({ id: "help", keys: ["?"], text: "show or hide this list of keys",
      run: () => this.toggleHelp() });
  }

  norm(b) {
    if (!b.id || !b.text || typeof b.run !== "function" || !(b.keys || []).length) {
      throw new Error(`incomplete key binding ${JSON.stringify(b.id)}`);
    }
    return { optional: [], ...b, parsed: b.keys.map(parse) };
  }

  /** Add a binding (see the module comment); returns this. */
  add(binding) {
    const b = this.norm(binding);
    if (this.bindings.some((o) => o.id === b.id)) throw new Error(`duplicate key binding id ${b.id}`);
    this.bindings.push(b);
    return this;
  }

  all() { return [...this.bindings, this.help]; }

  /** The binding (and key) that a keydown means now, or null. */
  find(ev) {
    const { key, mods } = eventKey(ev);
    for (const b of this.all()) {
      if (b.when && !b.when()) continue;
      for (const p of b.parsed) {
        if (p.key !== key) continue;
        const extra = [...mods].filter((m) => !p.mods.has(m));
        if ([...p.mods].every((m) => mods.has(m)) && extra.every((m) => b.optional.includes(m))) {
          return { binding: b, key };
        }
      }
    }
    return null;
  }

  handle(ev) {
    if (ev.defaultPrevented || ev.isComposing) return;
    const open = document.querySelector("dialog[open]");
    if (open) {
      // the help overlay: `?` closes it again (Esc closes any dialog natively); other
      // dialogs own their keys
      if (open === this.dialog && eventKey(ev).key === "?") { ev.preventDefault(); this.closeHelp(); }
      return;
    }
    const hit = this.find(ev);
    if (!hit) return;
    const { binding, key } = hit;
    if (typing(ev) && !binding.fields) return;
    const t = ev.target;
    if ((key === "Enter" || key === " ") && t && t.closest && t.closest("button, a[href], summary, [role=button]") &&
        !(this.buttons && t.closest(this.buttons))) return; // the focused control's own Enter/Space
    if (ev.repeat && !binding.repeat) { ev.preventDefault(); return; }
    let used = false;
    try {
      const out = binding.run(ev, key);
      used = out !== false;
      if (out && typeof out.then === "function") out.catch((err) => showError(err));
    } catch (err) {
      showError(err);
    }
    if (used) ev.preventDefault();
    window.dispatchEvent(new CustomEvent("labelloop:key", { detail: { page: this.page, id: binding.id, key, used } }));
  }

  attach() {
    window.addEventListener("keydown", this.onKeydown);
    return () => this.detach();
  }

  detach() {
    window.removeEventListener("keydown", this.onKeydown);
    this.closeHelp();
  }

  /** [{id, keys: [spec], label, text}] in declaration order, `?` last. */
  rows() {
    return this.all().map((b) => ({ id: b.id, keys: b.keys, text: b.text,
      label: b.label || b.keys.map(showKey).join(" / ") }));
  }

  /** The keys as a list for the page itself (same rows as the overlay). */
  list(testid = "key-list") {
    return h("ul", { class: "keylist", testid }, this.rows().map((r) =>
      h("li", { dataset: { keyId: r.id } }, h("kbd", {}, r.label), " ", r.text)));
  }

  /** A button that opens the overlay. */
  button() {
    return h("button", { type: "button", class: "link keyhelp-button", testid: "keyhelp-button",
      onclick: () => this.openHelp() }, "Keyboard shortcuts ", h("kbd", {}, "?"));
  }

  toggleHelp() {
    if (this.dialog && this.dialog.open) this.closeHelp(); else this.openHelp();
  }

  openHelp() {
    if (this.dialog && this.dialog.open) return;
    const close = h("button", { type: "button", testid: "keyhelp-close", onclick: () => this.closeHelp() },
      "Close ", h("kbd", {}, "Esc"));
    const body = h("tbody", {});
    for (const r of this.rows()) {
      body.append(h("tr", { testid: "keyhelp-row", dataset: { keyId: r.id, keys: JSON.stringify(r.keys) } },
        h("th", { scope: "row" }, h("kbd", {}, r.label)), h("td", {}, r.text)));
    }
    this.dialog = h("dialog", { class: "keyhelp", "aria-labelledby": "keyhelp-title", testid: "keyhelp" },
      h("h2", { id: "keyhelp-title" }, `Keyboard shortcuts · ${this.page}`),
      h("table", { class: "keyhelp-table" }, body),
      h("div", { class: "actions" }, close));
    this.dialog.addEventListener("close", () => { if (this.dialog) { this.dialog.remove(); this.dialog = null; } });
    document.body.append(this.dialog);
    this.dialog.showModal();
    close.focus();
  }

  closeHelp() {
    if (!this.dialog) return;
    const d = this.dialog;
    this.dialog = null;
    if (d.open) d.close();
    d.remove();
  }
}

/** Keep `el` (a list's current entry) in view. */
export function reveal(el) {
  if (el && el.scrollIntoView) el.scrollIntoView({ block: "nearest", inline: "nearest" });
}

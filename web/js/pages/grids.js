// Grid review: pages of 4/6/9 look-alike images with the model's best guess.
// Click (or press the cell's number) to deselect the odd ones; Enter confirms the page.

import { get, post, qs, rows, thumbUrl } from "../api.js";
import { clear, h, notAvailable, showError, toast, typing } from "../ui.js";

const SIZES = [4, 6, 9];

export async function render(root, { project }) {
  const classes = [...project.classes].sort((a, b) => a.position - b.position);
  const state = { size: Number(sessionStorage.getItem("labelloop.gridSize")) || 9, pages: [], index: 0, excluded: new Set(), label: "" };
  const sizeBox = h("div", { class: "chips", role: "radiogroup", "aria-label": "Images per page" });
  const labelSel = h("select", { id: "grid-label", testid: "grid-label" }, classes.map((c) => h("option", { value: c.name }, c.name)));
  const head = h("div", { class: "grid-head" });
  const cells = h("div", { class: "grid-page", testid: "grid-page" });
  const footer = h("div", { class: "actions" });
  root.append(h("h1", {}, "Grid review"),
    h("p", { class: "muted" }, "Look-alike images the model groups together. Deselect the ones that do not belong, then confirm the page."),
    h("div", { class: "toolbar" }, h("div", { class: "field" }, h("span", {}, "Images per page"), sizeBox),
      h("div", { class: "field" }, h("label", { for: "grid-label" }, "Label for the selected images"), labelSel)),
    head, cells, footer);

  function renderSizes() {
    clear(sizeBox, SIZES.map((n) => h("button", { type: "button", role: "radio", "aria-checked": String(state.size === n),
      class: state.size === n ? "primary" : "", testid: `grid-size-${n}`, onclick: () => { state.size = n; sessionStorage.setItem("labelloop.gridSize", String(n)); load(); } }, String(n))));
  }

  async function load() {
    renderSizes();
    let out;
    try {
      out = await get(`/projects/${project.id}/grids${qs({ size: state.size })}`);
    } catch (err) {
      if (err.missingRoute) { clear(root, h("h1", {}, "Grid review"), notAvailable("Grid review")); return; }
      showError(err);
      return;
    }
    state.pages = rows(out);
    state.index = 0;
    show();
  }

  function current() { return state.pages[state.index] || null; }

  function show() {
    const page = current();
    state.excluded = new Set();
    if (!page) {
      clear(head);
      clear(cells, h("p", { class: "muted", testid: "grid-empty" }, "No grid pages right now: they appear after the model has clustered the unlabelled images."));
      clear(footer);
      return;
    }
    const suggested = page.suggested_class || page.label || "";
    if (suggested && classes.some((c) => c.name === suggested)) labelSel.value = suggested;
    clear(head,
      h("span", { class: "suggested" }, "Suggested: ", h("strong", { testid: "grid-suggested" }, suggested || "–")),
      page.score != null ? h("span", { class: "muted" }, `confidence ${Number(page.score).toFixed(2)}`) : null,
      h("span", { class: "muted", testid: "grid-position" }, `page ${state.index + 1} of ${state.pages.length}`));
    cells.className = `grid-page n${page.item_ids.length <= 4 ? 4 : page.item_ids.length <= 6 ? 6 : 9}`;
    clear(cells, page.item_ids.map((id, i) => {
      const cell = h("button", { type: "button", class: "grid-cell", "aria-pressed": "true", testid: `grid-cell-${i + 1}`,
        dataset: { itemId: String(id) }, "aria-label": `Image ${i + 1}: included, click to leave out`,
        onclick: () => toggle(i) },
      h("img", { src: thumbUrl(id), alt: "" }), h("span", { class: "num" }, String(i + 1)), h("span", { class: "mark" }, "✓"));
      return cell;
    }));
    clear(footer,
      h("button", { type: "button", class: "primary", testid: "grid-confirm", onclick: () => confirm() }, "Confirm page ", h("kbd", {}, "Enter")),
      h("button", { type: "button", testid: "grid-skip", onclick: () => { state.index += 1; show(); } }, "Skip page ", h("kbd", {}, "→")),
      h("span", { class: "muted small", testid: "grid-selected-count" }, `${page.item_ids.length} selected`));
  }

  function toggle(i) {
    const page = current();
    if (!page || i >= page.item_ids.length) return;
    const id = page.item_ids[i];
    if (state.excluded.has(id)) state.excluded.delete(id); else state.excluded.add(id);
    const cell = cells.children[i];
    const out = state.excluded.has(id);
    cell.classList.toggle("excluded", out);
    cell.setAttribute("aria-pressed", String(!out));
    cell.setAttribute("aria-label", `Image ${i + 1}: ${out ? "left out, click to include" : "included, click to leave out"}`);
    cell.querySelector(".mark").textContent = out ? "✗" : "✓";
    const n = page.item_ids.length - state.excluded.size;
    const count = footer.querySelector("[data-testid=grid-selected-count]");
    if (count) count.textContent = `${n} selected`;
  }

  async function confirm() {
    const page = current();
    if (!page || state.busy) return;
    state.busy = true;
    try {
      const out = await post(`/grids/${page.id}/confirm`, { label: labelSel.value, exclude: [...state.excluded] });
      const n = out && (out.labelled ?? out.done ?? out.confirmed);
      toast(`Labelled ${n ?? page.item_ids.length - state.excluded.size} images as ${labelSel.value}`, "ok", 2500);
      state.pages.splice(state.index, 1);
      if (!state.pages.length) await load(); else { if (state.index >= state.pages.length) state.index = 0; show(); }
    } catch (err) {
      showError(err);
    } finally {
      state.busy = false;
    }
  }

  const onKey = (ev) => {
    if (typing(ev) || ev.defaultPrevented || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (/^[1-9]$/.test(ev.key)) { ev.preventDefault(); toggle(Number(ev.key) - 1); }
    else if (ev.key === "Enter" && !(ev.target && ev.target.tagName === "BUTTON" && ev.target.dataset.testid !== "grid-confirm" && !ev.target.classList.contains("grid-cell"))) { ev.preventDefault(); confirm(); }
    else if (ev.key === "ArrowRight" && state.pages.length) { state.index = (state.index + 1) % state.pages.length; show(); }
    else if (ev.key === "ArrowLeft" && state.pages.length) { state.index = (state.index + state.pages.length - 1) % state.pages.length; show(); }
  };
  window.addEventListener("keydown", onKey);
  await load();
  return () => window.removeEventListener("keydown", onKey);
}

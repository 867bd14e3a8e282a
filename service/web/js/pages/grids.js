// Grid review: one leased page of 4/6/9 look-alike images with the model's best guess.
// Click a cell (or press its number) to leave it out; a left-out image can be given its own
// class (the list under the page, or X for the image left out last) so it needs no second
// look; Enter confirms the page; → skips it; U undoes the last page confirm (the page comes back).
// The page's class starts on the model's suggestion; with none (no model yet) the labeller
// picks it, and confirm stays off until a class is chosen and every image on the page is shown.
// Every action has a key (press `?`). [data-testid=grid-page] has aria-busy="true" while a
// page is loading (its images included) or being confirmed/skipped.

import { get, post, qs, rows, thumbUrl } from "../api.js";
import { atLeast } from "../app.js";
import { Keymap } from "../keys.js";
import { gridsEmpty, loopState } from "../next_step.js";
import { clear, fmtNum, h, notAvailable, showError, toast, watchImages } from "../ui.js";

const SIZES = [4, 6, 9];

export async function render(root, { project, role }) {
  const classes = [...project.classes].sort((a, b) => a.position - b.position);
  const state = { size: Number(sessionStorage.getItem("labelloop.gridSize")) || 9, page: null, excluded: new Set(),
    fixes: new Map(), lastOut: null, busy: false, images: { shown: 0, total: 0 } };
  const sizeBox = h("div", { class: "chips", role: "radiogroup", "aria-label": "Images per page" });
  const labelSel = h("select", { id: "grid-label", testid: "grid-label" },
    h("option", { value: "" }, "choose a class"), classes.map((c) => h("option", { value: c.name }, c.name)));
  labelSel.addEventListener("change", () => settle());
  const head = h("div", { class: "grid-head" });
  const cells = h("div", { class: "grid-page", testid: "grid-page", "aria-busy": "true" });
  const fixBox = h("div", { class: "grid-fixes", testid: "grid-fixes" });
  const footer = h("div", { class: "actions" });
  let lastConfirmed = null; // {id, label}: the page U gives back
  const undoBtn = h("button", { type: "button", testid: "grid-undo", disabled: true, title: "Nothing to undo yet",
    onclick: () => undo() }, "Undo last confirm ", h("kbd", {}, "U"));
  const keys = new Keymap("Grids", { buttons: ".grid-cell, [data-testid=grid-confirm]" });
  // the images take the height the screen has; what is said about them and the actions sit beside them
  root.append(h("h1", {}, "Grid review"), h("div", { class: "grids-layout" }, cells,
    h("aside", { class: "grid-side card", testid: "grid-side", "aria-label": "The page's class and actions" }, head,
      h("div", { class: "toolbar" }, h("div", { class: "field" }, h("span", {}, "Images per page ", h("kbd", {}, "G")), sizeBox),
        h("div", { class: "field" }, h("label", { for: "grid-label" }, "Label for the selected images ", h("kbd", {}, "L")), labelSel)),
      footer, h("div", { class: "actions" }, undoBtn), fixBox,
      h("p", { class: "muted small" }, "Look-alike images the model groups together. Leave out the ones that do not belong (and give them their class if you know it), then confirm the page. ",
        keys.button()))));

  let inFlight = 0;
  function busy(delta) {
    inFlight += delta;
    settle();
  }

  const imagesShown = () => state.images.shown >= state.images.total;

  /** Why the page cannot be confirmed now ("" when it can). */
  function blocker() {
    if (!state.page) return "no page";
    if (!labelSel.value) return "Choose the class for these images first (L, or the list above).";
    if (!imagesShown()) {
      return `Images are still loading (${state.images.shown} of ${state.images.total} shown): confirm once you can see them all.`;
    }
    return "";
  }

  /** aria-busy and the confirm button from what is in flight, shown and chosen. */
  function settle() {
    cells.setAttribute("aria-busy", String(inFlight > 0 || !imagesShown()));
    const btn = footer.querySelector("[data-testid=grid-confirm]");
    if (!btn) return;
    const why = blocker();
    btn.disabled = !!why;
    btn.title = why || "Label the selected images with the chosen class (Enter)";
  }

  let stopImages = () => {};

  function renderSizes() {
    clear(sizeBox, SIZES.map((n) => h("button", { type: "button", role: "radio", "aria-checked": String(state.size === n),
      class: state.size === n ? "primary" : "", testid: `grid-size-${n}`,
      onclick: () => setSize(n) }, String(n))));
  }

  function setSize(n) {
    state.size = n;
    sessionStorage.setItem("labelloop.gridSize", String(n));
    return load();
  }

  let loads = 0; // only the newest load may draw
  async function load() {
    busy(1);
    try { await fetchAndShow(++loads); } finally { busy(-1); }
  }

  async function fetchAndShow(mine) {
    renderSizes();
    let out;
    try {
      out = await get(`/projects/${project.id}/grids${qs({ size: state.size, limit: 1 })}`);
      if (mine !== loads) return;
    } catch (err) {
      if (mine !== loads) return;
      if (err.missingRoute) { clear(root, h("h1", {}, "Grid review"), notAvailable("Grid review")); return; }
      clear(head); clear(footer);
      stopImages();
      state.images = { shown: 0, total: 0 };
      clear(cells, h("div", { class: "notice", testid: "grid-error" }, err.message));
      return;
    }
    state.page = rows(out)[0] || null;
    show();
  }

  function show() {
    const page = state.page;
    state.excluded = new Set();
    state.fixes = new Map();
    state.lastOut = null;
    clear(fixBox);
    stopImages();
    state.images = { shown: 0, total: 0 };
    if (!page) {
      clear(head);
      cells.className = "grid-page empty";
      clear(cells, h("div", { class: "muted", testid: "grid-empty" },
        "No grid pages right now: they appear once the unlabelled images have been clustered (after each model update)."));
      const mine = loads; // what is missing before pages come, and how far it is
      loopState(project).then((st) => {
        const box = cells.querySelector("[data-testid=grid-empty]");
        if (mine === loads && box && st.readiness) clear(box, gridsEmpty(st));
      });
      clear(footer, atLeast(role, "manager") ? h("button", { type: "button", testid: "grid-refresh", onclick: refresh },
        "Cluster now ", h("kbd", {}, "C")) : null);
      return;
    }
    const suggested = page.suggested_class || "";
    // no suggestion: no class either (a preset first class would label a page of squares as circles)
    labelSel.value = suggested && classes.some((c) => c.name === suggested) ? suggested : "";
    clear(head,
      h("span", { class: "suggested" }, "Suggested: ", h("strong", { testid: "grid-suggested" }, suggested || "no model yet")),
      page.confidence != null ? h("span", { class: "muted", title: "mean probability of the suggested class" }, `confidence ${fmtNum(page.confidence, 2)}`) : null,
      page.agreement != null ? h("span", { class: "muted", title: "share of images whose own best class is the suggestion" }, `agreement ${Math.round(page.agreement * 100)}%`) : null,
      page.cohesion != null ? h("span", { class: "muted", title: "how alike the images are (mean cosine to the cluster centre)" }, `cohesion ${fmtNum(page.cohesion, 2)}`) : null);
    const n = page.item_ids.length;
    cells.className = `grid-page n${n <= 4 ? 4 : n <= 6 ? 6 : 9}`;
    clear(cells, page.item_ids.map((id, i) => h("button", { type: "button", class: "grid-cell", "aria-pressed": "true",
      testid: `grid-cell-${i + 1}`, dataset: { itemId: String(id) }, "aria-label": `Image ${i + 1}: included, click to leave out`,
      onclick: () => toggle(i) },
    h("img", { src: thumbUrl(id), alt: "" }), h("span", { class: "num" }, String(i + 1)), h("span", { class: "mark" }, "✓"),
    h("span", { class: "fix", testid: `grid-cell-fix-${i + 1}`, hidden: true }))));
    clear(footer,
      h("button", { type: "button", class: "primary", testid: "grid-confirm", onclick: () => confirm() }, "Confirm page ", h("kbd", {}, "Enter")),
      h("button", { type: "button", testid: "grid-skip", onclick: () => skip() }, "Skip page ", h("kbd", {}, "→")),
      h("span", { class: "muted small", testid: "grid-selected-count" }, `${n} selected`));
    stopImages = watchImages(cells, (shown, total) => { state.images = { shown, total }; settle(); });
  }

  function toggle(i) {
    const page = state.page;
    if (!page || i >= page.item_ids.length) return false;
    const id = page.item_ids[i];
    if (state.excluded.has(id)) { state.excluded.delete(id); state.fixes.delete(id); } else { state.excluded.add(id); state.lastOut = i; }
    drawCell(i);
    drawFixes();
    return true;
  }

  /** A left-out image's own class: "" sends it back to the queue unlabelled. */
  function setFix(i, name) {
    const id = state.page.item_ids[i];
    if (name) state.fixes.set(id, name); else state.fixes.delete(id);
    drawCell(i);
  }

  /** Step the class of the image left out last: back to the queue → each class in turn. */
  function stepFix() {
    const page = state.page;
    if (!page || state.lastOut === null || !state.excluded.has(page.item_ids[state.lastOut])) return false;
    const names = ["", ...classes.map((c) => c.name)];
    const now = state.fixes.get(page.item_ids[state.lastOut]) || "";
    setFix(state.lastOut, names[(names.indexOf(now) + 1) % names.length]);
    drawFixes();
    return true;
  }

  function drawFixes() {
    const page = state.page;
    const out = page.item_ids.map((id, i) => [id, i]).filter(([id]) => state.excluded.has(id));
    if (!out.length) { clear(fixBox); return; }
    clear(fixBox, h("p", { class: "muted small" }, "Left out: give an image its class to label it now, or leave it for the queue ", h("kbd", {}, "X")),
      out.map(([id, i]) => h("label", { class: "grid-fix" }, `Image ${i + 1} `,
        h("select", { testid: `grid-fix-${i + 1}`, onchange: (ev) => setFix(i, ev.target.value) },
          h("option", { value: "" }, "back to the queue"),
          classes.map((c) => h("option", { value: c.name, selected: state.fixes.get(id) === c.name }, c.name))))));
  }

  /** Include every image (out = false) or leave every image out (out = true); invert when out is null. */
  function setAll(out) {
    const page = state.page;
    if (!page) return false;
    page.item_ids.forEach((id, i) => {
      const leave = out === null ? !state.excluded.has(id) : out;
      if (leave) state.excluded.add(id); else { state.excluded.delete(id); state.fixes.delete(id); }
      drawCell(i);
    });
    drawFixes();
    return true;
  }

  function drawCell(i) {
    const page = state.page;
    const out = state.excluded.has(page.item_ids[i]);
    const fix = state.fixes.get(page.item_ids[i]) || "";
    const cell = cells.children[i];
    cell.classList.toggle("excluded", out);
    cell.classList.toggle("fixed", !!fix);
    cell.setAttribute("aria-pressed", String(!out));
    cell.setAttribute("aria-label", `Image ${i + 1}: ${fix ? `labelled ${fix}` : out ? "left out" : "included"}, click to ${out ? "include" : "leave out"}`);
    cell.querySelector(".mark").textContent = out ? "✗" : "✓";
    const tag = cell.querySelector(".fix");
    tag.textContent = fix;
    tag.hidden = !fix;
    const count = footer.querySelector("[data-testid=grid-selected-count]");
    if (count) {
      count.textContent = `${page.item_ids.length - state.excluded.size} selected`
        + (state.fixes.size ? `, ${state.fixes.size} with their own class` : "");
    }
  }

  /** Step the label for the selected images through the classes. */
  function stepLabel(step) {
    if (!classes.length) return false;
    const i = classes.findIndex((c) => c.name === labelSel.value);
    const to = i < 0 ? (step > 0 ? 0 : classes.length - 1) : (i + step + classes.length) % classes.length;
    labelSel.value = classes[to].name;
    settle();
    return true;
  }

  async function act(fn) {
    if (!state.page || state.busy) return false;
    state.busy = true;
    busy(1);
    try { await fn(state.page); await load(); } catch (err) { showError(err); } finally { state.busy = false; busy(-1); }
    return true;
  }

  /** Enter / the button: confirm, or say what is missing (the class, or images still loading). */
  function confirmKey() {
    if (!state.page) return false;
    const why = blocker();
    if (why) { toast(why); return true; }
    confirm();
    return true;
  }

  const confirm = () => blocker() ? false : act(async (page) => {
    const corrections = Object.fromEntries(state.fixes);
    const exclude = [...state.excluded].filter((id) => !state.fixes.has(id));
    const out = await post(`/grids/${encodeURIComponent(page.id)}/confirm`, { label: labelSel.value, exclude, corrections });
    const n = Array.isArray(out.labelled) ? out.labelled.length : out.labelled;
    const fixed = (out.corrected || []).length;
    const gone = (out.unavailable || []).length;
    toast(`Labelled ${n} images as ${out.label || labelSel.value}` + (fixed ? `, ${fixed} with their own class` : "")
      + (gone ? ` (${gone} were taken meanwhile)` : ""), "ok", 2500);
    lastConfirmed = { id: page.id, label: out.label || labelSel.value };
    undoBtn.disabled = false;
    undoBtn.title = `Undo the confirm of the page labelled ${lastConfirmed.label} (U)`;
  });

  /** U / "Undo last confirm": the page's labels are undone and the page is shown again. */
  async function undo() {
    if (!lastConfirmed) { toast("No page confirm to undo here yet."); return false; }
    if (state.busy) return false;
    const { id, label } = lastConfirmed;
    lastConfirmed = null;
    undoBtn.disabled = true;
    undoBtn.title = "Nothing to undo yet";
    state.busy = true;
    busy(1);
    try {
      const out = await post(`/grids/${encodeURIComponent(id)}/undo`, {});
      const gone = (out.unavailable || []).length;
      toast(`Undone: ${out.restored.length} images are no longer ${label}` + (gone ? ` (${gone} changed since, left as they are)` : ""), "ok", 2500);
      await load();
    } catch (err) { showError(err, "Undo"); } finally { state.busy = false; busy(-1); }
    return true;
  }
  const skip = () => act((page) => post(`/grids/${encodeURIComponent(page.id)}/skip`, {}));

  async function refresh() {
    try { const job = await post(`/projects/${project.id}/grids/refresh`, {}); toast(`Clustering started (job ${job.id})`, "ok"); } catch (err) { showError(err); }
  }

  keys.add({ id: "toggle", keys: ["1", "2", "3", "4", "5", "6", "7", "8", "9"], label: "1–9",
    text: "leave image N out of the page (again: include it)", run: (_, key) => toggle(Number(key) - 1) })
    .add({ id: "fix", keys: ["x"], text: "the image left out last: next class for it (back to the queue, then each class)",
      run: () => stepFix() })
    .add({ id: "include-all", keys: ["a"], text: "include every image again", run: () => setAll(false) })
    .add({ id: "invert", keys: ["i"], text: "invert the selection (leave out what is in, include what is out)",
      run: () => setAll(null) })
    .add({ id: "confirm", keys: ["Enter"], text: "confirm the page: label the selected images",
      run: () => confirmKey() })
    .add({ id: "skip", keys: ["ArrowRight", "s"], text: "skip this page (it goes back for later)",
      run: () => (state.page ? skip() : false) })
    .add({ id: "label", keys: ["l", "Shift+l"], text: "next / previous label for the selected images",
      run: (ev) => stepLabel(ev.shiftKey ? -1 : 1) })
    .add({ id: "undo", keys: ["u"], text: "undo your last page confirm (the page comes back)", run: () => undo() })
    .add({ id: "size", keys: ["g"], text: "images per page: 4, 6, 9",
      run: () => setSize(SIZES[(SIZES.indexOf(state.size) + 1) % SIZES.length]) });
  if (atLeast(role, "manager")) {
    keys.add({ id: "cluster", keys: ["c"], text: "no pages yet: cluster the images now (managers)",
      run: () => (state.page ? false : refresh()) });
  }
  const detach = keys.attach();
  await load();
  return detach;
}

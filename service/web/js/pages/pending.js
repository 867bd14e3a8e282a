// Pending: the model's proposed pre-labels. Confirm one or the whole page,
// correct, reject; filter by class and score. Every action has a key (press `?`):
// J/K move through the proposals, C confirms, X rejects, 1-9 correct, Enter confirms the page,
// U undoes the last action (a confirm, correction, rejection or page confirm of yours).
//
// The list says when it is settled: aria-busy="true" on [data-testid=pending-list] while a
// reload or an action is in flight or the page's images are still loading, "false" once what
// it shows is the server's answer, every image in sight. "Confirm page" (and Enter) stays
// off until then: nobody confirms images they have not seen.

import { get, post, qs, thumbUrl } from "../api.js";
import { Keymap, reveal } from "../keys.js";
import { loopState, pendingEmpty } from "../next_step.js";
import { clear, h, notAvailable, showError, toast, watchImages } from "../ui.js";

const PAGE = 24;

export async function render(root, { project }) {
  const classes = [...project.classes].sort((a, b) => a.position - b.position);
  const state = { label: "", minScore: "", offset: 0, rows: [], count: 0, cursor: 0, inFlight: 0,
    images: { shown: 0, total: 0 } };
  const working = new Set(); // prediction ids with an action in flight
  const keys = new Keymap("Pending");
  const classSel = h("select", { id: "pending-class", testid: "pending-class" },
    h("option", { value: "" }, "all classes"), classes.map((c) => h("option", { value: c.name }, c.name)));
  const scoreIn = h("input", { id: "pending-min-score", type: "number", min: "0", max: "1", step: "0.05",
    placeholder: "0.00", testid: "pending-min-score" });
  const summary = h("span", { class: "muted", testid: "pending-count", "aria-live": "polite" });
  const imagesNote = h("span", { class: "muted small", testid: "pending-images" });
  const confirmPage = h("button", { type: "button", class: "primary", testid: "pending-confirm-page",
    onclick: () => confirmAll() }, "Confirm page ", h("kbd", {}, "Enter"));
  const undoBtn = h("button", { type: "button", testid: "pending-undo", disabled: true,
    title: "Nothing to undo yet", onclick: () => undo() }, "Undo ", h("kbd", {}, "U"));
  let last = null; // {ids, what}: the caller's last action here, which U undoes
  const list = h("ul", { class: "thumbs", testid: "pending-list", "aria-busy": "true" });
  const pager = h("div", { class: "actions" });
  const statement = h("p", { class: "small", testid: "pending-statement", "aria-live": "polite" });
  root.append(
    h("h1", {}, "Pending pre-labels"),
    h("p", { class: "muted" }, "The model proposes these labels with a calibrated confidence. ",
      "Confirm what is right, correct or reject the rest. ", keys.button()),
    statement,
    h("div", { class: "toolbar" },
      h("div", { class: "field" }, h("label", { for: "pending-class" }, "Class ", h("kbd", {}, "F")), classSel),
      h("div", { class: "field" }, h("label", { for: "pending-min-score" }, "Minimum score ", h("kbd", {}, "M")), scoreIn),
      confirmPage, undoBtn, summary, imagesNote),
    list, pager);

  // what the current model's thresholds prove, in words (one line above the proposals)
  get(`/projects/${project.id}/model-versions`).then((versions) => {
    const current = (versions || []).find((v) => v.is_current && v.thresholds && v.thresholds.statement);
    if (current) statement.textContent = `Model v${current.version}: ${current.thresholds.statement}.`;
  }).catch(() => {});

  const imagesShown = () => state.images.shown >= state.images.total;

  function busy(delta) {
    state.inFlight += delta;
    settle();
  }

  /** aria-busy, "Confirm page" and the images note from what is in flight and what is shown. */
  function settle() {
    const { shown, total } = state.images;
    list.setAttribute("aria-busy", String(state.inFlight > 0 || !imagesShown()));
    confirmPage.disabled = !state.rows.length || !imagesShown();
    confirmPage.title = imagesShown() ? "Confirm every proposal on this page (Enter)"
      : "Wait until every image on the page is shown";
    imagesNote.textContent = imagesShown() ? "" : `Loading images: ${shown} of ${total} shown`;
  }

  let stopImages = () => {};

  let loads = 0;  // only the newest reload may draw (filters can fire several at once)
  async function load() {
    busy(1);
    try { await fetchAndDraw(++loads); } finally { busy(-1); }
  }

  async function fetchAndDraw(mine) {
    let out;
    try {
      out = await get(`/projects/${project.id}/pending${qs({ class: state.label, min_score: state.minScore,
        offset: state.offset, limit: PAGE })}`);
      if (mine !== loads) return;
    } catch (err) {
      if (mine !== loads) return;
      if (err.missingRoute) { clear(root, h("h1", {}, "Pending pre-labels"), notAvailable("Pending")); return; }
      showError(err);
      return;
    }
    state.rows = out.data || [];
    state.count = out.count ?? state.rows.length;
    if (!state.rows.length && state.offset > 0 && state.count > 0) { // the last page emptied: go back one
      state.offset = Math.max(0, state.offset - PAGE);
      await load();
      return;
    }
    state.cursor = Math.max(0, Math.min(state.cursor, state.rows.length - 1));
    summary.textContent = state.count ? `${state.count} proposals` : "";
    const filtered = Boolean(state.label || state.minScore);
    clear(list, state.rows.length ? state.rows.map(card)
      : h("li", { class: "muted empty", testid: "pending-empty" }, "Nothing pending" +
        (filtered ? " for this filter." : ": the model has not proposed anything yet.")));
    if (!state.rows.length && !filtered) explainEmpty(mine);
    stopImages();
    stopImages = watchImages(list, (shown, total) => { state.images = { shown, total }; settle(); });
    clear(pager,
      state.offset > 0 ? h("button", { type: "button", testid: "pending-prev", onclick: () => prevPage() },
        "← Previous ", h("kbd", {}, "P")) : null,
      state.offset + PAGE < state.count ? h("button", { type: "button", testid: "pending-next", onclick: () => nextPage() },
        "Next → ", h("kbd", {}, "N")) : null);
    markCursor(false);
  }

  /** An empty list without a filter: say what is missing before proposals come, and how far it is. */
  async function explainEmpty(mine) {
    const st = await loopState(project);
    const li = list.querySelector("[data-testid=pending-empty]");
    if (mine !== loads || !li || !st.readiness) return;
    clear(li, pendingEmpty(st));
  }

  function describe(p) {
    const labels = p.labels && p.labels.length ? p.labels : p.label ? [p.label] : [];
    const shapes = (p.boxes || []).length + (p.polygons || []).length;
    return labels.length ? labels.join(", ") : shapes ? `${shapes} shapes` : "the proposal";
  }

  function card(p, i) {
    const labels = p.labels && p.labels.length ? p.labels : [p.label];
    const correctSel = h("select", { "aria-label": `Correct label for ${p.file_name || p.item_id}`, testid: `correct-select-${p.prediction_id}` },
      h("option", { value: "" }, "correct to…"),
      classes.filter((c) => project.task === "multilabel" || !labels.includes(c.name))
        .map((c) => h("option", { value: c.name }, c.name)));
    correctSel.addEventListener("change", () => {
      if (correctSel.value) act("correct", p, [correctSel.value]);
    });
    return h("li", { class: "thumb", testid: `pending-${p.prediction_id}`, dataset: { itemId: String(p.item_id) },
      onclick: () => { state.cursor = i; markCursor(false); } },
    h("div", { class: "pic" }, h("img", { src: thumbUrl(p.item_id), alt: p.file_name || `item ${p.item_id}` })),
    h("div", { class: "meta" },
      h("div", { class: "row" },
        h("strong", { testid: "pending-label" }, labels.join(", ")),
        h("span", { class: "score", title: "model confidence", testid: "pending-score" }, Number(p.score).toFixed(3))),
      h("div", { class: "row" },
        h("span", { class: "badge model", title: "model version" }, `model v${p.model_version}`),
        (p.flags || []).map((f) => h("span", { class: "badge hard", title: "hard example", testid: "hard-badge" }, f))),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "primary", testid: `confirm-${p.prediction_id}`, title: "Confirm (C)",
          onclick: () => act("confirm", p) }, "✓ Confirm"),
        h("button", { type: "button", class: "danger", testid: `reject-${p.prediction_id}`, title: "Reject (X)",
          onclick: () => act("reject", p) }, "✗ Reject")),
      correctSel));
  }

  /** Highlight the current proposal (the one C, X, 1-9 and E act on). */
  function markCursor(scroll = true) {
    [...list.children].forEach((li, i) => {
      const on = i === state.cursor && state.rows.length > 0;
      li.classList.toggle("current", on);
      if (on) li.setAttribute("aria-current", "true"); else li.removeAttribute("aria-current");
    });
    if (scroll) reveal(list.children[state.cursor]);
  }

  function move(step) {
    if (!state.rows.length) return false;
    const to = Math.max(0, Math.min(state.rows.length - 1, state.cursor + step));
    if (to === state.cursor) return false;
    state.cursor = to;
    markCursor();
    return true;
  }

  /** Cards per row as laid out now (for ↑ / ↓). */
  function perRow() {
    const cards = [...list.children];
    if (!cards.length) return 1;
    const top = cards[0].offsetTop;
    return Math.max(1, cards.filter((c) => c.offsetTop === top).length);
  }

  const current = () => state.rows[state.cursor] || null;

  async function act(kind, p, labels) {
    if (working.has(p.prediction_id)) return;
    working.add(p.prediction_id);
    const li = list.querySelector(`[data-testid="pending-${p.prediction_id}"]`);
    if (li) { li.classList.add("done"); li.querySelectorAll("button, select").forEach((b) => { b.disabled = true; }); }
    busy(1);
    try {
      try {
        if (kind === "correct") await post(`/projects/${project.id}/pending/correct`, { id: p.prediction_id, labels });
        else await post(`/projects/${project.id}/pending/${kind}`, { ids: [p.prediction_id] });
        toast(kind === "confirm" ? `Confirmed ${describe(p)}` : kind === "reject" ? "Rejected: back to the queue"
          : `Corrected to ${labels.join(", ")}`, "ok", 2000);
        remember([p.prediction_id], kind === "confirm" ? `the confirm of ${describe(p)}`
          : kind === "reject" ? "the rejection" : `the correction to ${labels.join(", ")}`);
      } catch (err) { showError(err); } finally { working.delete(p.prediction_id); }
      await load();
    } finally { busy(-1); }
  }

  /** Enter / "Confirm page": only once every image on the page is shown. */
  function confirmPageKey() {
    if (!state.rows.length) return false;
    if (!imagesShown()) {
      toast(`Images are still loading (${state.images.shown} of ${state.images.total} shown): confirm the page once you can see them all.`);
      return true;
    }
    confirmAll();
    return true;
  }

  async function confirmAll() {
    if (!state.rows.length || !imagesShown()) return;
    const ids = state.rows.map((p) => p.prediction_id);
    busy(1);
    try {
      try {
        const out = await post(`/projects/${project.id}/pending/confirm`, { ids });
        toast(`Confirmed ${out.done ?? ids.length} pre-labels`, "ok", 2500);
        remember(ids, `the confirm of ${ids.length} pre-labels`);
      } catch (err) { showError(err); }
      await load();
    } finally { busy(-1); }
  }

  function remember(ids, what) {
    last = { ids, what };
    undoBtn.disabled = false;
    undoBtn.title = `Undo ${what} (U)`;
  }

  /** U / "Undo": the last action here comes back (the labels from before it, the proposal open again). */
  async function undo() {
    if (!last) { toast("Nothing to undo here yet."); return false; }
    const { ids, what } = last;
    last = null;
    undoBtn.disabled = true;
    undoBtn.title = "Nothing to undo yet";
    busy(1);
    try {
      try {
        await post(`/projects/${project.id}/pending/undo`, { ids });
        toast(`Undone: ${what}`, "ok", 2500);
      } catch (err) { showError(err, "Undo"); }
      await load();
    } finally { busy(-1); }
    return true;
  }

  function nextPage() {
    if (state.offset + PAGE >= state.count) return false;
    state.offset += PAGE; state.cursor = 0; load();
    return true;
  }

  function prevPage() {
    if (state.offset <= 0) return false;
    state.offset = Math.max(0, state.offset - PAGE); state.cursor = 0; load();
    return true;
  }

  function correctTo(n) {
    const p = current();
    const c = classes[n - 1];
    if (!p || !c) return false;
    const labels = p.labels && p.labels.length ? p.labels : [p.label];
    if (project.task !== "multilabel" && labels.includes(c.name)) {
      toast(`${c.name} is the proposed label: press C to confirm it.`);
      return true;
    }
    act("correct", p, [c.name]);
    return true;
  }

  // reload only when a filter really changed (a blur after a programmatic change fires "change" again)
  classSel.addEventListener("change", () => {
    if (state.label === classSel.value) return;
    state.label = classSel.value; state.offset = 0; state.cursor = 0; load();
  });
  scoreIn.addEventListener("change", () => {
    if (state.minScore === scoreIn.value) return;
    state.minScore = scoreIn.value; state.offset = 0; state.cursor = 0; load();
  });

  const n = Math.min(9, classes.length);
  keys.add({ id: "next", keys: ["j", "ArrowRight"], repeat: true, text: "next proposal", run: () => move(1) })
    .add({ id: "previous", keys: ["k", "ArrowLeft"], repeat: true, text: "previous proposal", run: () => move(-1) })
    .add({ id: "down", keys: ["ArrowDown"], repeat: true, text: "the proposal below", run: () => move(perRow()) })
    .add({ id: "up", keys: ["ArrowUp"], repeat: true, text: "the proposal above", run: () => move(-perRow()) })
    .add({ id: "confirm", keys: ["c"], text: "confirm the current proposal",
      run: () => (current() ? act("confirm", current()) : false) })
    .add({ id: "reject", keys: ["x"], text: "reject the current proposal (the image goes back to the queue)",
      run: () => (current() ? act("reject", current()) : false) });
  if (n) {
    keys.add({ id: "correct", keys: Array.from({ length: n }, (_, i) => String(i + 1)), label: n > 1 ? `1–${n}` : "1",
      text: "correct the current proposal to that class", run: (_, key) => correctTo(Number(key)) });
  }
  keys.add({ id: "correct-list", keys: ["e"], text: "pick the correction from the current proposal's list",
    run: () => {
      const p = current();
      const sel = p && list.querySelector(`[data-testid="correct-select-${p.prediction_id}"]`);
      if (!sel) return false;
      sel.focus();
      return true;
    } })
    .add({ id: "confirm-page", keys: ["Enter"], text: "confirm every proposal on this page (once its images are shown)",
      run: () => confirmPageKey() })
    .add({ id: "undo", keys: ["u"], text: "undo your last action here", run: () => undo() })
    .add({ id: "next-page", keys: ["n"], text: "next page", run: () => nextPage() })
    .add({ id: "previous-page", keys: ["p"], text: "previous page", run: () => prevPage() })
    .add({ id: "filter-class", keys: ["f"], text: "filter by class (arrows choose, Esc returns)",
      run: () => { classSel.focus(); } })
    .add({ id: "filter-score", keys: ["m"], text: "filter by minimum score (type it, Esc returns)",
      run: () => { scoreIn.focus(); scoreIn.select(); } })
    .add({ id: "clear-filters", keys: ["a"], text: "show all: clear both filters",
      run: () => {
        if (!state.label && !state.minScore) return false;
        classSel.value = ""; scoreIn.value = "";
        state.label = ""; state.minScore = ""; state.offset = 0; state.cursor = 0; load();
        return true;
      } })
    .add({ id: "leave-field", keys: ["Escape"], fields: true, text: "leave a filter or list, back to the proposals",
      run: (ev) => {
        const t = ev.target;
        if (!t || !t.matches || !t.matches("input, select")) return false;
        t.blur();
        return true;
      } });
  const detach = keys.attach();
  await load();
  return detach;
}

// Pending: the model's proposed pre-labels. Confirm one or the whole page,
// correct, reject; filter by class and score. Keys: Enter confirms the page.

import { get, post, qs, thumbUrl } from "../api.js";
import { clear, h, notAvailable, showError, toast, typing } from "../ui.js";

const PAGE = 24;

export async function render(root, { project }) {
  const classes = [...project.classes].sort((a, b) => a.position - b.position);
  const state = { label: "", minScore: "", offset: 0, rows: [], count: 0 };
  const classSel = h("select", { id: "pending-class", testid: "pending-class" },
    h("option", { value: "" }, "all classes"), classes.map((c) => h("option", { value: c.name }, c.name)));
  const scoreIn = h("input", { id: "pending-min-score", type: "number", min: "0", max: "1", step: "0.05",
    placeholder: "0.00", testid: "pending-min-score" });
  const summary = h("span", { class: "muted", testid: "pending-count", "aria-live": "polite" });
  const confirmPage = h("button", { type: "button", class: "primary", testid: "pending-confirm-page",
    onclick: () => confirmAll() }, "Confirm page ", h("kbd", {}, "Enter"));
  const list = h("ul", { class: "thumbs", testid: "pending-list" });
  const pager = h("div", { class: "actions" });
  root.append(
    h("h1", {}, "Pending pre-labels"),
    h("p", { class: "muted" }, "The model proposes these labels with a calibrated confidence. ",
      "Confirm what is right, correct or reject the rest."),
    h("div", { class: "toolbar" },
      h("div", { class: "field" }, h("label", { for: "pending-class" }, "Class"), classSel),
      h("div", { class: "field" }, h("label", { for: "pending-min-score" }, "Minimum score"), scoreIn),
      confirmPage, summary),
    list, pager);

  let loads = 0;  // only the newest reload may draw (filters can fire several at once)
  async function load() {
    const mine = ++loads;
    let out;
    try {
      out = await get(`/projects/${project.id}/pending${qs({ class: state.label, min_score: state.minScore,
        offset: state.offset, limit: PAGE })}`);
      if (mine !== loads) return;
    } catch (err) {
      if (err.missingRoute) { clear(root, h("h1", {}, "Pending pre-labels"), notAvailable("Pending")); return; }
      showError(err);
      return;
    }
    state.rows = out.data || [];
    state.count = out.count ?? state.rows.length;
    summary.textContent = state.count ? `${state.count} proposals` : "";
    confirmPage.disabled = !state.rows.length;
    clear(list, state.rows.length ? state.rows.map(card)
      : h("li", { class: "muted", testid: "pending-empty" }, "Nothing pending" +
        (state.label || state.minScore ? " for this filter." : ": the model has not proposed anything yet.")));
    clear(pager,
      state.offset > 0 ? h("button", { type: "button", onclick: () => { state.offset = Math.max(0, state.offset - PAGE); load(); } }, "← Previous") : null,
      state.offset + PAGE < state.count ? h("button", { type: "button", onclick: () => { state.offset += PAGE; load(); } }, "Next →") : null);
  }

  function card(p) {
    const labels = p.labels && p.labels.length ? p.labels : [p.label];
    const correctSel = h("select", { "aria-label": `Correct label for ${p.file_name || p.item_id}`, testid: `correct-select-${p.prediction_id}` },
      h("option", { value: "" }, "correct to…"),
      classes.filter((c) => project.task === "multilabel" || !labels.includes(c.name))
        .map((c) => h("option", { value: c.name }, c.name)));
    correctSel.addEventListener("change", () => {
      if (correctSel.value) act("correct", p, [correctSel.value]);
    });
    return h("li", { class: "thumb", testid: `pending-${p.prediction_id}`, dataset: { itemId: String(p.item_id) } },
      h("div", { class: "pic" }, h("img", { src: thumbUrl(p.item_id), alt: p.file_name || `item ${p.item_id}`, loading: "lazy" })),
      h("div", { class: "meta" },
        h("div", { class: "row" },
          h("strong", { testid: "pending-label" }, labels.join(", ")),
          h("span", { class: "score", title: "model confidence", testid: "pending-score" }, Number(p.score).toFixed(3))),
        h("div", { class: "row" },
          h("span", { class: "badge model", title: "model version" }, `model v${p.model_version}`),
          (p.flags || []).map((f) => h("span", { class: "badge hard", title: "hard example", testid: "hard-badge" }, f))),
        h("div", { class: "actions" },
          h("button", { type: "button", class: "primary", testid: `confirm-${p.prediction_id}`,
            onclick: () => act("confirm", p) }, "✓ Confirm"),
          h("button", { type: "button", class: "danger", testid: `reject-${p.prediction_id}`,
            onclick: () => act("reject", p) }, "✗ Reject")),
        correctSel));
  }

  async function act(kind, p, labels) {
    try {
      if (kind === "correct") await post(`/projects/${project.id}/pending/correct`, { id: p.prediction_id, labels });
      else await post(`/projects/${project.id}/pending/${kind}`, { ids: [p.prediction_id] });
      toast(kind === "confirm" ? `Confirmed ${p.label}` : kind === "reject" ? "Rejected: back to the queue"
        : `Corrected to ${labels.join(", ")}`, "ok", 2000);
    } catch (err) { showError(err); }
    await load();
  }

  async function confirmAll() {
    if (!state.rows.length) return;
    const ids = state.rows.map((p) => p.prediction_id);
    try {
      const out = await post(`/projects/${project.id}/pending/confirm`, { ids });
      toast(`Confirmed ${out.done ?? ids.length} pre-labels`, "ok", 2500);
    } catch (err) { showError(err); }
    await load();
  }

  // reload only when a filter really changed (a blur after a programmatic change fires "change" again)
  classSel.addEventListener("change", () => {
    if (state.label === classSel.value) return;
    state.label = classSel.value; state.offset = 0; load();
  });
  scoreIn.addEventListener("change", () => {
    if (state.minScore === scoreIn.value) return;
    state.minScore = scoreIn.value; state.offset = 0; load();
  });
  const onKey = (ev) => {
    if (typing(ev) || ev.defaultPrevented || document.querySelector("dialog[open]")) return;
    if (ev.key === "Enter" && !(ev.target && ev.target.tagName === "BUTTON")) { ev.preventDefault(); confirmAll(); }
  };
  window.addEventListener("keydown", onKey);
  await load();
  return () => window.removeEventListener("keydown", onKey);
}

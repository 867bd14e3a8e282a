// Review queue: hard-example flags (likely label errors, unstable predictions,
// false / missed detections) for a reviewer to confirm, fix or dismiss.

import { get, qs, request, rows, thumbUrl } from "../api.js";
import { loopState, reviewEmpty } from "../next_step.js";
import { classColor, clear, fmtNum, h, notAvailable, s, showError, toast } from "../ui.js";

const KIND_HELP = {
  "label error": "The model, trained without this image, confidently disagrees with its label.",
  unstable: "The model's proposal for this image changes between views or versions.",
  "false detection": "The model, trained without this image, is sure of a box the labels lack: an object left out?",
  "missed detection": "A labelled box the model, trained without this image, does not find: a box around nothing, or the wrong class?",
};
const BOX_KINDS = new Set(["false detection", "missed detection"]);

// The flagged boxes drawn over the thumbnail (dashed: the model's; solid: a person's)
function boxOverlay(f, colorOf) {
  const boxes = (f.detail && f.detail.boxes) || [];
  if (!f.width || !f.height || !boxes.length) return null;
  return s("svg", { class: "flag-overlay", viewBox: `0 0 ${f.width} ${f.height}`, preserveAspectRatio: "xMidYMid meet",
    "data-testid": "flag-overlay", "aria-hidden": "true" },
  boxes.map((b) => {
    const [x, y, w, hgt] = b.box || [0, 0, 0, 0];
    return s("rect", { x, y, width: w, height: hgt, fill: "none", stroke: colorOf(b.label),
      "stroke-width": Math.max(1, Math.max(f.width, f.height) / 80),
      "stroke-dasharray": f.kind === "false detection" ? `${Math.max(2, f.width / 40)}` : "none" });
  }));
}

const sameBox = (a, b) => a.length === b.length && a.every((v, i) => Math.abs(Number(v) - Number(b[i])) < 0.01);

// One line per box a detection flag points at ("bag at 12, 40 (30 × 28) · model score 0.97"),
// with the one-click fix: add the model's box (false detection) or remove the labelled one.
function boxLines(f, fix) {
  const boxes = (f.detail && f.detail.boxes) || [];
  return boxes.map((b, i) => {
    const [x, y, w, hgt] = (b.box || []).map((v) => Math.round(v));
    const added = f.kind === "false detection";
    const why = added ? `model score ${fmtNum(b.score, 2)}`
      : `best overlap of a ${b.label} box ${fmtNum(b.best_same_class_iou || 0, 2)}`;
    const shapes = { boxes: (f.boxes || []).map((x0) => ({ label: x0.label, bbox: x0.bbox })), polygons: f.polygons || [] };
    if (added) shapes.boxes.push({ label: b.label, bbox: b.box });
    else shapes.boxes = shapes.boxes.filter((x0) => !(x0.label === b.label && sameBox(x0.bbox, b.box)));
    return h("li", { testid: "flag-box" }, h("strong", {}, b.label), ` at ${x}, ${y} (${w} × ${hgt}) · ${why} `,
      h("button", { type: "button", class: "link", testid: `review-${added ? "add" : "remove"}-box-${f.id}-${i}`,
        onclick: () => fix(shapes, added ? `Added the ${b.label} box` : `Removed the ${b.label} box`) },
      added ? "add this box" : "remove this box"));
  });
}

export async function render(root, { project }) {
  const classes = [...project.classes].sort((a, b) => a.position - b.position);
  const colorOf = (name) => { const i = classes.findIndex((c) => c.name === name); return classColor(classes[i], Math.max(0, i)); };
  const kindSel = h("select", { id: "review-kind", testid: "review-kind" }, h("option", { value: "" }, "all kinds"),
    Object.keys(KIND_HELP).map((k) => h("option", { value: k }, k)));
  const list = h("ul", { class: "thumbs", testid: "review-list" });
  const summary = h("span", { class: "muted", testid: "review-count" });
  root.append(h("h1", {}, "Review queue"),
    h("p", { class: "muted" }, "Hard examples the model points at, most suspicious first. Confirm the label, fix it, or dismiss the flag."),
    h("div", { class: "toolbar" }, h("div", { class: "field" }, h("label", { for: "review-kind" }, "Kind"), kindSel), summary),
    list);

  let explained = 0;
  async function load() {
    let out;
    try {
      out = await get(`/projects/${project.id}/review${qs({ kind: kindSel.value, state: "open" })}`);
    } catch (err) {
      if (err.missingRoute) { clear(root, h("h1", {}, "Review queue"), notAvailable("The review queue")); return; }
      showError(err);
      return;
    }
    const flags = rows(out);
    summary.textContent = `${out && out.count != null ? out.count : flags.length} open flags`;
    clear(list, flags.length ? flags.map(card) : h("li", { class: "muted empty", testid: "review-empty" }, "No open flags."));
    if (!flags.length && !kindSel.value) {
      const mine = ++explained; // what is missing before flags come, and how far it is
      const st = await loopState(project);
      const li = list.querySelector("[data-testid=review-empty]");
      if (mine === explained && li && st.readiness) clear(li, reviewEmpty(st));
    }
  }

  function card(f) {
    const d = f.detail || {};
    const current = f.labels || [];
    const suggested = d.suggested || (f.proposal && f.proposal.label) || d.proposed || null;
    const unstable = f.kind === "unstable";
    const boxes = BOX_KINDS.has(f.kind);
    const fixSel = h("select", { "aria-label": `Correct label for ${f.file_name}`, testid: `review-fix-${f.id}` },
      h("option", { value: "" }, "fix label to…"),
      classes.map((c) => h("option", { value: c.name, selected: suggested === c.name && !current.includes(c.name) }, c.name)));
    return h("li", { class: "thumb", testid: `flag-${f.id}`, dataset: { itemId: String(f.item_id) } },
      h("div", { class: "pic" }, h("img", { src: thumbUrl(f.item_id), alt: f.file_name || `item ${f.item_id}`, loading: "lazy" }),
        boxes ? boxOverlay(f, colorOf) : null),
      h("div", { class: "meta" },
        h("div", { class: "row" }, h("span", { class: "badge hard", title: KIND_HELP[f.kind] || "" }, f.kind),
          h("span", { class: "score", title: "higher = more likely wrong" }, fmtNum(f.score, 2)),
          f.is_holdout ? h("span", { class: "badge", title: "a hold-out label: it calibrates the model" }, "hold-out") : null,
          f.stale ? h("span", { class: "badge", title: "the label or proposal changed since the flag" }, "changed") : null),
        boxes ? h("ul", { class: "small", testid: "flag-boxes" }, boxLines(f, (shapes, done) =>
          resolve(f, { action: "fix", ...shapes }, done)))
          : h("div", { class: "row small" }, "label: ", h("strong", { testid: "flag-labels" }, current.length ? current.join(", ") : "–"),
            f.provenance ? h("span", { class: "muted" }, `(${f.provenance})`) : null),
        boxes ? h("div", { class: "small muted" }, `${(f.boxes || []).length} labelled boxes on this image`) : null,
        suggested ? h("div", { class: "row small" }, unstable ? "proposal: " : "model says: ", h("strong", {}, String(suggested)),
          d.self_confidence != null ? h("span", { class: "muted" }, ` · confidence in the label ${fmtNum(d.self_confidence, 2)}`) : null,
          f.proposal && f.proposal.score != null ? h("span", { class: "muted" }, ` · score ${fmtNum(f.proposal.score, 2)}`) : null) : null,
        d.reason ? h("div", { class: "small", testid: `flag-reason-${f.id}` }, d.reason) : null,
        h("div", { class: "small muted", title: f.file_name }, f.file_name),
        h("div", { class: "actions" },
          h("button", { type: "button", testid: `review-confirm-${f.id}`, onclick: () => resolve(f, { action: "confirm" }) },
            unstable ? "Proposal is right" : boxes ? "Boxes are right" : "Label is right"),
          h("button", { type: "button", class: "link", testid: `review-dismiss-${f.id}`, onclick: () => resolve(f, { action: "dismiss" }) }, "Dismiss")),
        boxes ? null : h("div", { class: "actions" }, fixSel,
          h("button", { type: "button", class: "primary", testid: `review-apply-${f.id}`,
            onclick: () => fixSel.value ? resolve(f, { action: "fix", labels: [fixSel.value] }) : toast("Choose the right class first.") }, "Fix"))));
  }

  async function resolve(f, body, fixed) {
    try {
      const headers = body.action === "fix" && f.etag ? { "If-Match": f.etag } : {};
      await request("POST", `/review/${f.id}/resolve`, { json: body, headers });
      toast(body.action === "fix" ? fixed || `Fixed: ${body.labels.join(", ")}` : body.action === "confirm" ? "Confirmed" : "Dismissed", "ok", 2000);
    } catch (err) {
      if (err.status === 412) toast("Someone changed this image's label since the flag was raised: look again.", "error");
      else showError(err);
    }
    await load();
  }

  kindSel.addEventListener("change", load);
  await load();
}

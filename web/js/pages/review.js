// Review queue: hard-example flags (likely label errors, unstable predictions,
// false / missed detections) for a reviewer to resolve.

import { get, imageUrl, post, qs, rows, thumbUrl } from "../api.js";
import { preview } from "../editor.js";
import { clear, fmtNum, h, notAvailable, showError, toast } from "../ui.js";

const KIND_HELP = {
  "label error": "The model, trained without this image, disagrees confidently with its label.",
  unstable: "The model's answer changes between versions or views.",
  "false detection": "A confident box with no matching object in the labels.",
  "missed detection": "An object the labels lack, or a labelled object the model cannot find.",
};

export async function render(root, { project }) {
  const classes = [...project.classes].sort((a, b) => a.position - b.position);
  const kindSel = h("select", { id: "review-kind", testid: "review-kind" }, h("option", { value: "" }, "all kinds"),
    Object.keys(KIND_HELP).map((k) => h("option", { value: k }, k)));
  const list = h("ul", { class: "thumbs", testid: "review-list" });
  const summary = h("span", { class: "muted", testid: "review-count" });
  root.append(h("h1", {}, "Review queue"),
    h("p", { class: "muted" }, "Hard examples the model points at. Keep the label, fix it, or dismiss the flag."),
    h("div", { class: "toolbar" }, h("div", { class: "field" }, h("label", { for: "review-kind" }, "Kind"), kindSel), summary),
    list);

  async function load() {
    let out;
    try {
      out = await get(`/projects/${project.id}/review${qs({ kind: kindSel.value })}`);
    } catch (err) {
      if (err.missingRoute) { clear(root, h("h1", {}, "Review queue"), notAvailable("The review queue")); return; }
      showError(err);
      return;
    }
    const flags = rows(out).filter((f) => !f.state || f.state === "open");
    summary.textContent = `${out && out.count != null ? out.count : flags.length} open flags`;
    clear(list, flags.length ? flags.map(card) : h("li", { class: "muted", testid: "review-empty" }, "No open flags."));
  }

  function card(f) {
    const d = f.detail || {};
    const current = f.labels || d.labels || (f.label ? [f.label] : d.given ? [d.given] : []);
    const suggested = f.suggested || d.suggested || d.predicted || d.model_label || null;
    const box = d.bbox || d.box;
    const pic = box && f.width && f.height
      ? preview(imageUrl(f.item_id), f.width, f.height, { boxes: [{ label: d.label || suggested || "?", bbox: box }] }, classes, `review-preview-${f.id}`)
      : h("div", { class: "pic" }, h("img", { src: thumbUrl(f.item_id), alt: f.file_name || `item ${f.item_id}`, loading: "lazy" }));
    const fixSel = h("select", { "aria-label": "Fix the label", testid: `review-fix-${f.id}` }, h("option", { value: "" }, "fix label to…"),
      classes.map((c) => h("option", { value: c.name, selected: suggested === c.name && !current.includes(c.name) }, c.name)));
    return h("li", { class: "thumb", testid: `flag-${f.id}`, dataset: { itemId: String(f.item_id) } }, pic,
      h("div", { class: "meta" },
        h("div", { class: "row" }, h("span", { class: "badge hard", title: KIND_HELP[f.kind] || "" }, f.kind),
          h("span", { class: "score", title: "how strongly the model flags it" }, fmtNum(f.score, 2))),
        h("div", { class: "row small" }, "label: ", h("strong", {}, current.length ? current.join(", ") : "–"),
          suggested ? [" · model: ", h("strong", {}, String(suggested))] : null),
        f.file_name ? h("div", { class: "small muted" }, f.file_name) : null,
        h("div", { class: "actions" },
          h("button", { type: "button", testid: `review-keep-${f.id}`, onclick: () => resolve(f, { resolution: "dismissed" }) }, "Label is right"),
          h("button", { type: "button", class: "primary", testid: `review-apply-${f.id}`,
            onclick: () => fixSel.value ? resolve(f, { resolution: "fixed", labels: [fixSel.value] }) : toast("Choose the right class first.") }, "Fix")),
        fixSel));
  }

  async function resolve(f, body) {
    try {
      await post(`/review/${f.id}/resolve`, body);
      toast(body.resolution === "fixed" ? `Fixed: ${body.labels.join(", ")}` : "Flag dismissed", "ok", 2000);
    } catch (err) { showError(err); }
    await load();
  }

  kindSel.addEventListener("change", load);
  await load();
}

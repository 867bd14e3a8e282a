// Automatic annotation dialog: model, label matching, threshold, clean old,
// masks as polygons; progress bar and cancel while the job runs. The project's current
// model comes first and is chosen, then its other versions (newest first), then external models.

import { get, post, rows, watchJob } from "./api.js";
import { clear, h, notAvailable, progressBar, showError } from "./ui.js";

/** Open the dialog for `project`; onDone(job) after the job ends. */
export async function openAnnotateDialog(project, { onDone = () => {} } = {}) {
  const classes = [...project.classes].sort((a, b) => a.position - b.position);
  const dlg = h("dialog", { "aria-labelledby": "ann-title", testid: "annotate-dialog" });
  const content = h("div");
  dlg.append(h("h2", { id: "ann-title" }, "Automatic annotation"), content);
  document.body.append(dlg);
  let watcher = null;
  dlg.addEventListener("close", () => { if (watcher) watcher.close(); dlg.remove(); });
  dlg.showModal();
  content.append(h("p", { class: "muted" }, "Loading models…"));

  const models = [];
  let available = false;
  try {
    for (const m of rows(await get("/models"))) {
      models.push({ key: `model:${m.id}`, body: { model_id: m.id }, name: `${m.name || `model ${m.id}`} (${m.kind || "external"})`,
        labels: m.labels || m.classes || [], task: m.task });
    }
    available = true;
  } catch (err) {
    if (!err.missingRoute) showError(err);
  }
  try {
    const versions = rows(await get(`/projects/${project.id}/model-versions`))
      .filter((v) => v.status === "ready" && v.kind !== "external")
      .sort((a, b) => Number(!!b.is_current) - Number(!!a.is_current) || b.version - a.version);
    models.unshift(...versions.map((v) => ({ key: `version:${v.id}`, body: { model_version_id: v.id },
      name: `this project's model v${v.version}${v.is_current ? " (current)" : ""}`, labels: v.classes || [] })));
  } catch (err) { if (!err.missingRoute) showError(err); }

  const closeBtn = h("button", { type: "button", testid: "annotate-close", onclick: () => dlg.close() }, "Close");
  if (!available && !models.length) {
    clear(content, notAvailable("Automatic annotation"), h("div", { class: "actions" }, closeBtn));
    return dlg;
  }
  if (!models.length) {
    clear(content, h("p", { class: "muted", testid: "annotate-no-models" },
      "No model yet: train one, or register an external model (POST /api/v1/models)."), h("div", { class: "actions" }, closeBtn));
    return dlg;
  }

  const modelSel = h("select", { id: "ann-model", testid: "annotate-model" }, models.map((m) => h("option", { value: m.key }, m.name)));
  modelSel.value = models[0].key; // the current model (or the newest version) when the project has one
  const mapBody = h("tbody");
  const threshold = h("input", { id: "ann-threshold", type: "number", min: "0", max: "1", step: "0.05", value: "0.5", testid: "annotate-threshold" });
  const cleanOld = h("input", { id: "ann-clean", type: "checkbox", testid: "annotate-clean-old" });
  const masks = h("input", { id: "ann-masks", type: "checkbox", checked: project.task === "segmentation", testid: "annotate-masks" });
  const start = h("button", { type: "submit", class: "primary", testid: "annotate-start" }, "Annotate");
  // in the DOM only while a job runs (buttons are display: inline-flex, which beats the hidden attribute)
  const cancel = h("button", { type: "button", class: "danger", testid: "annotate-cancel" }, "Cancel job");
  const bar = progressBar("annotate-progress");
  const status = h("p", { class: "small", role: "status", "aria-live": "polite", testid: "annotate-status" });
  const progressBox = h("div", { hidden: true }, bar.el, status);

  const fillMap = () => {
    const m = models.find((x) => x.key === modelSel.value);
    clear(mapBody, (m ? m.labels : []).map((lab) => {
      const match = classes.find((c) => c.name.toLowerCase() === String(lab).toLowerCase());
      return h("tr", {}, h("td", {}, lab), h("td", {}, h("select", { "aria-label": `Project class for model label ${lab}`, dataset: { modelLabel: lab } },
        h("option", { value: "" }, "(ignore)"),
        classes.map((c) => h("option", { value: c.name, selected: match && match.name === c.name }, c.name)))));
    }));
    if (!m || !m.labels.length) mapBody.append(h("tr", {}, h("td", { colspan: "2", class: "muted" }, "This model lists no labels.")));
  };
  modelSel.addEventListener("change", fillMap);
  fillMap();

  const form = h("form", { class: "form-grid" },
    h("label", { for: "ann-model" }, "Model"), modelSel,
    h("div", { class: "full" }, h("h3", {}, "Label matching"),
      h("table", { class: "map-table", testid: "annotate-map" }, h("thead", {}, h("tr", {}, h("th", {}, "Model label"), h("th", {}, "Project class"))), mapBody)),
    h("label", { for: "ann-threshold" }, "Threshold"), threshold,
    h("label", { for: "ann-clean" }, "Clean old annotations"), h("div", {}, cleanOld),
    h("label", { for: "ann-masks" }, "Masks as polygons"), h("div", {}, masks),
    h("div", { class: "full" }, progressBox),
    h("div", { class: "actions" }, start, closeBtn));
  clear(content, form);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const m = models.find((x) => x.key === modelSel.value);
    const labelMap = {};
    for (const sel of mapBody.querySelectorAll("select")) if (sel.value) labelMap[sel.dataset.modelLabel] = sel.value;
    let job;
    try {
      job = await post(`/projects/${project.id}/annotate`, { ...m.body, label_map: labelMap,
        threshold: Number(threshold.value), clean_old: cleanOld.checked, masks_as_polygons: masks.checked });
    } catch (err) {
      if (err.missingRoute) { clear(content, notAvailable("Automatic annotation"), h("div", { class: "actions" }, closeBtn)); return; }
      showError(err, "Cannot start");
      return;
    }
    start.disabled = true;
    for (const el of form.querySelectorAll("input, select")) el.disabled = true;
    progressBox.hidden = false;
    start.after(cancel);
    bar.set(0, "queued");
    status.textContent = `Job ${job.id} queued…`;
    cancel.onclick = async () => {
      cancel.disabled = true;
      try { await post(`/jobs/${job.id}/cancel`, {}); status.textContent = "Cancelling…"; } catch (err) { showError(err); cancel.disabled = false; }
    };
    watcher = watchJob(job.id, (j) => {
      if (!j) return;
      bar.set(j.progress, j.state === "running" ? `${Math.round(j.progress * 100)}%` : j.state);
      status.textContent = j.message || j.state;
      status.dataset.state = j.state;
    });
    const end = await watcher.done;
    cancel.remove();
    if (end) {
      status.dataset.state = end.state;
      status.textContent = end.state === "succeeded" ? `Done. ${summarise(end.result)}`
        : end.state === "cancelled" ? "Cancelled." : `Failed: ${end.error || end.message}`;
    }
    onDone(end);
  });
  return dlg;
}

/** The job's result in words (no internal ids). */
function summarise(result) {
  if (!result || typeof result !== "object") return "";
  const n = (x) => Number(x || 0);
  const parts = [`${n(result.processed ?? result.items)} of ${n(result.items)} images annotated`,
    `${n(result.proposed)} proposals waiting in Pending`];
  if (n(result.cleaned)) parts.push(`${n(result.cleaned)} old automatic labels cleared`);
  if ((result.dropped_labels || []).length) parts.push(`model labels left out: ${result.dropped_labels.join(", ")}`);
  return parts.join(" · ");
}

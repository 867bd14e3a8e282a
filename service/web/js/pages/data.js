// Data browser: every image of the project with its current labels and who or what made
// them; filter (status, class, provenance, model version, score, labeller, flag, hold-out),
// page through, open one image with its history, edit its label, send it back to the queue,
// and export the selection.

import { get, imageUrl, parseTime, qs, request, rows, thumbUrl } from "../api.js";
import { atLeast } from "../app.js";
import { clear, fmtNum, fmtTime, h, showError, toast } from "../ui.js";
import { originWord } from "../words.js";

const PAGE = 50;
const STATUSES = ["unlabelled", "labelled", "proposed", "skipped", "review"];
const PROVENANCE = [["human", "person"], ["model-confirmed", "model, confirmed by a person"], ["model", "model (auto-accepted)"],
  ["import", "imported"]];
const FLAGS = [["any", "any open flag"], ["label error", "label error"], ["unstable", "unstable"],
  ["false detection", "false detection"], ["missed detection", "missed detection"]];
const FORMATS = [["csv", "CSV"], ["coco", "COCO JSON"], ["yolo", "YOLO (zip)"], ["voc", "Pascal VOC (zip)"],
  ["cvat", "CVAT XML"], ["labelstudio", "Label Studio JSON"]];
const CLASSIFICATION = new Set(["multiclass", "multilabel"]);

function select(id, label, options, all = "all") {
  const el = h("select", { id, testid: id }, h("option", { value: "" }, all),
    options.map(([v, l]) => h("option", { value: String(v) }, l)));
  return { el, field: h("div", { class: "field" }, h("label", { for: id }, label), el) };
}

function numberInput(id, label, placeholder) {
  const el = h("input", { id, testid: id, type: "number", min: "0", max: "1", step: "0.01", placeholder,
    style: { width: "6rem" } });
  return { el, field: h("div", { class: "field" }, h("label", { for: id }, label), el) };
}

export async function render(root, { project, role }) {
  const canReject = atLeast(role, "reviewer");
  const canExport = atLeast(role, "manager");
  const classes = [...project.classes].sort((a, b) => a.position - b.position);
  let versions = [];
  let members = [];
  try { versions = rows(await get(`/projects/${project.id}/model-versions`)); } catch (err) { if (!err.missingRoute) showError(err); }
  if (canExport) {
    try { members = rows(await get(`/projects/${project.id}/members`)); } catch { members = []; }
  }

  const f = {
    status: select("data-status", "Status", STATUSES.map((s) => [s, s])),
    label: select("data-class", "Class", classes.map((c) => [c.name, c.archived ? `${c.name} (archived)` : c.name])),
    provenance: select("data-provenance", "Made by", PROVENANCE),
    model_version_id: select("data-model", "Model version", versions.map((v) => [v.id, `v${v.version}${v.is_current ? " (current)" : ""}`])),
    labeller_id: select("data-labeller", "Labeller", members.map((m) => [m.user_id, m.user_name])),
    flag: select("data-flag", "Flag", FLAGS),
    holdout: select("data-holdout", "Hold-out", [["true", "hold-out only"], ["false", "not hold-out"]]),
    score_min: numberInput("data-score-min", "Score from", "0"),
    score_max: numberInput("data-score-max", "to", "1"),
  };
  if (!members.length) f.labeller_id.field.hidden = true;
  if (!versions.length) f.model_version_id.field.hidden = true;
  const count = h("span", { class: "muted", testid: "data-count", role: "status", "aria-live": "polite" });
  const prev = h("button", { type: "button", testid: "data-prev" }, "← Previous");
  const next = h("button", { type: "button", testid: "data-next" }, "Next →");
  const tbody = h("tbody", { testid: "data-rows" });
  const table = h("table", { class: "results", testid: "data-table" },
    h("thead", {}, h("tr", {}, ["", "File", "Status", "Labels", "Made by", "Labeller", "Model", "Score", "Proposal", "Flag"]
      .map((t) => h("th", { scope: "col" }, t)))), tbody);
  const detail = h("section", { class: "card", testid: "data-detail", hidden: true, "aria-live": "polite" });
  const fmt = h("select", { id: "data-export-format", testid: "data-export-format" }, FORMATS.map(([v, l]) => h("option", { value: v }, l)));
  const exportBtn = h("button", { type: "button", testid: "data-export" }, "Export selection");

  root.append(h("h1", {}, "Data"),
    h("p", { class: "muted" }, "Every image with its current labels and who or what made them. Filter, open an image to see its history, fix its label or send it back to the queue."),
    h("div", { class: "toolbar", style: { flexWrap: "wrap", gap: ".6rem" } }, Object.values(f).map((x) => x.field),
      h("button", { type: "button", class: "link", testid: "data-clear", onclick: () => { for (const x of Object.values(f)) x.el.value = ""; offset = 0; load(); } }, "Clear filters")),
    canExport ? h("div", { class: "toolbar" }, h("label", { for: "data-export-format" }, "Export the selection as"), fmt, exportBtn) : null,
    detail,
    h("div", { class: "toolbar" }, prev, next, count),
    h("div", { style: { overflowX: "auto" } }, table));

  let offset = 0;
  let total = 0;
  let seq = 0;
  const filters = () => Object.fromEntries(Object.entries(f).map(([k, x]) => [k, x.el.value]));

  async function load() {
    const mine = ++seq;
    let out;
    try {
      out = await get(`/projects/${project.id}/items${qs({ ...filters(), limit: PAGE, offset })}`);
    } catch (err) { showError(err); return; }
    if (mine !== seq) return;
    total = out.count;
    const list = rows(out);
    count.textContent = total ? `${offset + 1}–${offset + list.length} of ${total} images` : "No images match these filters.";
    prev.disabled = offset === 0;
    next.disabled = offset + list.length >= total;
    clear(tbody, list.map(row));
  }

  function row(it) {
    const open = () => openItem(it.id);
    return h("tr", { testid: `data-row-${it.id}`, dataset: { itemId: String(it.id) }, tabindex: "0", style: { cursor: "pointer" },
      onclick: open, onkeydown: (ev) => { if (ev.key === "Enter") open(); } },
    h("td", {}, h("img", { src: it.thumbnail_url || thumbUrl(it.id), alt: it.file_name, loading: "lazy", width: 48, height: 48,
      style: { objectFit: "contain", background: "#1a1f2b" } })),
    h("td", { class: "small", title: it.file_name }, it.file_name),
    h("td", {}, it.status, it.is_holdout ? h("span", { class: "badge", title: "a hold-out image: it calibrates the model" }, " hold-out") : null),
    h("td", { testid: `data-labels-${it.id}` }, it.labels.length ? it.labels.join(", ") : "–"),
    h("td", { class: "small" }, it.provenance || "–"),
    h("td", { class: "small" }, it.labeller || "–"),
    h("td", { class: "small" }, it.model_version ? `v${it.model_version}` : "–"),
    h("td", { class: "small" }, it.score == null ? "–" : fmtNum(it.score, 3)),
    h("td", { class: "small" }, it.proposal || "–"),
    h("td", { class: "small" }, it.flag ? h("span", { class: "badge hard" }, it.flag) : "–"));
  }

  async function openItem(id) {
    let tl;
    try { tl = await get(`/items/${id}/timeline`); } catch (err) { showError(err); return; }
    const it = tl.item;
    detail.hidden = false;
    const editor = CLASSIFICATION.has(project.task) ? labelEditor(it, tl.etag) : h("p", { class: "small muted" },
      "Boxes and polygons are edited on the Label page.");
    clear(detail,
      h("div", { class: "toolbar" }, h("h2", { style: { margin: 0 } }, it.file_name),
        h("button", { type: "button", class: "link", testid: "data-detail-close", onclick: () => { detail.hidden = true; } }, "Close")),
      h("div", { style: { display: "flex", gap: "1rem", flexWrap: "wrap" } },
        h("img", { src: imageUrl(it.id), alt: it.file_name, testid: "data-detail-image",
          style: { width: "320px", maxWidth: "100%", height: "240px", objectFit: "contain", imageRendering: "pixelated", background: "#1a1f2b" } }),
        h("div", { style: { flex: "1", minWidth: "260px" } },
          h("p", {}, "Status: ", h("strong", { testid: "data-detail-status" }, it.status), " · labels: ",
            h("strong", { testid: "data-detail-labels" }, it.labels.length ? it.labels.join(", ") : "none"),
            it.provenance ? ` (${it.provenance}${it.labeller ? `, ${it.labeller}` : ""})` : ""),
          editor,
          canReject && ["labelled", "review", "proposed"].includes(it.status)
            ? h("button", { type: "button", testid: "data-reject", onclick: () => reject(it, tl.etag) }, "Send back to the queue") : null,
          h("h3", {}, "History"),
          h("ol", { class: "small", testid: "data-history" }, tl.entries.map(entry)))));
    detail.scrollIntoView({ block: "nearest" });
  }

  function entry(e) {
    const when = fmtTime(parseTime(e.at));
    const who = e.user ? ` by ${e.user}` : "";
    const model = e.model_version ? ` · model v${e.model_version}` : "";
    const score = e.score != null ? ` · score ${fmtNum(e.score, 3)}` : "";
    const labels = e.labels && e.labels.length ? `: ${e.labels.join(", ")}` : "";
    const text = {
      version: `version ${e.version} (${originWord(e.what)}${e.provenance ? `, ${e.provenance}` : ""})${labels || ": no labels"}${who}${model}${score}`,
      proposal: `proposal ${e.what}${labels}${who}${model}${score}`,
      flag: `flag ${e.what}${who}${score}`,
      audit: `${e.what === "item.reject" ? "sent back to the queue" : e.what}${who}${e.detail && e.detail.reason ? ` (${e.detail.reason})` : ""}`,
    }[e.kind] || e.what;
    return h("li", { testid: `history-${e.kind}` }, h("span", { class: "muted" }, when), " ", text);
  }

  function labelEditor(it, etag) {
    const active = classes.filter((c) => !c.archived || it.labels.includes(c.name));
    if (project.task === "multiclass") {
      const sel = h("select", { testid: "data-edit-class", "aria-label": "New label" },
        h("option", { value: "" }, "change label to…"), active.map((c) => h("option", { value: c.name }, c.name)));
      return h("div", { class: "actions" }, sel, h("button", { type: "button", class: "primary", testid: "data-edit-save",
        onclick: () => sel.value ? save(it, etag, [sel.value]) : toast("Choose a class first.") }, "Save label"));
    }
    const boxes = active.map((c) => h("label", { class: "chip" }, h("input", { type: "checkbox", value: c.name,
      checked: it.labels.includes(c.name) }), ` ${c.name}`));
    return h("div", { class: "actions" }, boxes, h("button", { type: "button", class: "primary", testid: "data-edit-save",
      onclick: () => save(it, etag, boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value)) }, "Save labels"));
  }

  async function save(it, etag, labels) {
    try {
      await request("POST", `/items/${it.id}/annotations`, { json: { labels }, headers: it.version > 0 ? { "If-Match": etag } : {} });
      toast(`Labelled ${labels.join(", ") || "with no class"}`, "ok", 2000);
    } catch (err) {
      if (err.status === 412) toast("Someone changed this image's label meanwhile: look again.", "error");
      else showError(err);
    }
    await load();
    await openItem(it.id);
  }

  async function reject(it, etag) {
    try {
      await request("POST", `/items/${it.id}/reject`, { json: { reason: "" }, headers: it.version > 0 ? { "If-Match": etag } : {} });
      toast("Sent back to the queue", "ok", 2000);
    } catch (err) {
      if (err.status === 412) toast("Someone changed this image's label meanwhile: look again.", "error");
      else showError(err);
    }
    await load();
    await openItem(it.id);
  }

  async function exportSelection() {
    try {
      const res = await request("GET", `/projects/${project.id}/items/export${qs({ ...filters(), format: fmt.value })}`, { raw: true });
      const m = /filename="?([^";]+)"?/.exec(res.headers.get("Content-Disposition") || "");
      const url = URL.createObjectURL(res.data);
      const a = h("a", { href: url, download: m ? m[1] : `${project.name}-${fmt.value}`, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      toast(`Exported the labels of the selection (${total} images)`, "ok");
    } catch (err) { showError(err, "Export"); }
  }

  for (const x of Object.values(f)) x.el.addEventListener("change", () => { offset = 0; load(); });
  prev.addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
  next.addEventListener("click", () => { offset += PAGE; load(); });
  exportBtn.addEventListener("click", exportSelection);
  await load();
}

// Import / export: upload images (drag and drop, per-file results), import
// annotations (COCO, YOLO, VOC, CVAT, Label Studio, CSV), export in each format, and
// export as a job (a subset, with the images or not, a train/val split) with progress
// and a download link when the file is ready.

import { API, get, post, qs, request, rows, watchJob } from "../api.js";
import { clear, h, progressBar, showError, toast } from "../ui.js";

const FORMATS = [["coco", "COCO JSON"], ["yolo", "YOLO (zip)"], ["voc", "Pascal VOC (zip)"], ["cvat", "CVAT XML"],
  ["labelstudio", "Label Studio JSON"], ["csv", "CSV"]];
const BATCH_FILES = 20;
const BATCH_BYTES = 32 * 1024 * 1024;

export async function render(root, { project }) {
  root.append(h("h1", {}, "Import / export"));
  const grid = h("div", { class: "settings" });
  root.append(grid);
  grid.append(uploadCard(project), importCard(project), exportCard(project), exportJobCard(project));
}

const STATUSES = [["labelled", "labelled"], ["review", "in review"], ["proposed", "pre-labelled"],
  ["unlabelled", "unlabelled"], ["skipped", "skipped"]];
const PROVENANCES = [["human", "people"], ["model-confirmed", "confirmed pre-labels"], ["model", "auto-accepted"],
  ["import", "imported"]];

function checks(name, options) {
  const boxes = options.map(([v, l]) => {
    const id = `${name}-${v}`.replace(/[^\w-]/g, "_");
    return h("label", { class: "check", for: id }, h("input", { id, type: "checkbox", value: v, testid: `${name}-${v}` }), ` ${l}`);
  });
  return { el: h("div", { class: "checks", testid: name, style: { display: "flex", flexWrap: "wrap", gap: ".2rem .9rem" } }, boxes),
    values: () => boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value) };
}

function exportJobCard(project) {
  const fmt = h("select", { id: "xj-format", testid: "export-job-format" }, FORMATS.map(([v, l]) => h("option", { value: v }, l)));
  const status = checks("export-job-status", STATUSES);
  const prov = checks("export-job-provenance", PROVENANCES);
  const classes = checks("export-job-class", (project.classes || []).map((c) => [c.name, c.name]));
  const images = h("input", { id: "xj-images", type: "checkbox", testid: "export-job-images" });
  const share = h("input", { id: "xj-val", type: "number", min: "0", max: "0.9", step: "0.05", value: "0", testid: "export-job-val" });
  const seed = h("input", { id: "xj-seed", type: "number", min: "0", step: "1", value: "0", testid: "export-job-seed" });
  const bar = progressBar("export-job-progress");
  bar.el.hidden = true;
  const out = h("div", { role: "status", "aria-live": "polite", testid: "export-job-result" });
  const start = h("button", { type: "submit", class: "primary", testid: "export-job-start" }, "Start export");
  const earlier = h("ul", { class: "small", testid: "export-job-list" });
  const form = h("form", { class: "form-grid" },
    h("label", { for: "xj-format" }, "Format"), fmt,
    h("span", {}, "Status"), status.el,
    h("span", {}, "Labelled by"), prov.el,
    h("span", {}, "Classes"), classes.el,
    h("label", { for: "xj-images" }, "Include images"), h("div", {}, images, h("span", { class: "muted small" }, " a zip with the image files")),
    h("label", { for: "xj-val" }, "Validation share"), h("div", {}, share, h("span", { class: "muted small" }, " 0 = no split; e.g. 0.2 puts a fifth in val/")),
    h("label", { for: "xj-seed" }, "Split seed"), seed,
    h("div", { class: "actions" }, start));

  const link = (job) => h("a", { href: `${API}/jobs/${job.id}/download`, download: job.result.file, testid: "export-job-download" },
    `Download ${job.result.file}`);
  const describe = (job) => `${job.result.images} images` + (job.result.val ? ` (${job.result.train} train, ${job.result.val} val)` : "") +
    ` · ${(job.result.size / 1024).toFixed(1)} KB`;

  async function listEarlier() {
    try {
      const jobs = rows(await get(`/projects/${project.id}/jobs${qs({ limit: 50 })}`))
        .filter((j) => j.kind === "export" && j.state === "succeeded").slice(0, 5);
      clear(earlier, jobs.map((j) => h("li", {}, link(j), ` · ${describe(j)}`)));
    } catch { /* the list is a convenience */ }
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const val = Number(share.value || 0);
    if (!(val >= 0 && val <= 0.9)) { clear(out, h("p", { class: "notice error" }, "The validation share must be between 0 and 0.9.")); return; }
    const body = { format: fmt.value, status: status.values(), provenance: prov.values(), classes: classes.values(),
      include_images: images.checked, val_share: val, seed: Number(seed.value || 0) };
    start.disabled = true;
    bar.el.hidden = false;
    bar.set(0, "queued");
    clear(out);
    try {
      const job = await post(`/projects/${project.id}/export-jobs`, body);
      const { done } = watchJob(job.id, (j) => { if (j) bar.set(j.progress, j.message || j.state); });
      const end = await done;
      if (end && end.state === "succeeded") {
        bar.set(1, "done");
        clear(out, h("p", {}, link(end), ` · ${describe(end)}`));
        toast(`Export ready: ${end.result.file}`, "ok");
        listEarlier();
      } else {
        clear(out, h("p", { class: "notice error" }, end ? `Export ${end.state}: ${end.message || end.error}` : "The export job disappeared."));
      }
    } catch (err) {
      bar.el.hidden = true;
      clear(out, h("p", { class: "notice error" }, err.message));
    } finally {
      start.disabled = false;
    }
  });
  listEarlier();
  // the whole row: the options on the left, the job and the files on the right
  return h("section", { class: "card", "aria-labelledby": "xj-title", testid: "export-job-card", style: { gridColumn: "1 / -1" } },
    h("h2", { id: "xj-title" }, "Export as a job"),
    h("p", { class: "muted small" }, "For large projects and training sets: choose which images (nothing ticked = all), " +
      "whether the image files go along, and a train/val split (seeded, written to export.json)."),
    h("div", { style: { display: "flex", flexWrap: "wrap", gap: "1rem 2rem", alignItems: "flex-start" } },
      h("div", { style: { flex: "1 1 420px", maxWidth: "620px", minWidth: "0" } }, form),
      h("div", { style: { flex: "1 1 320px", minWidth: "0" } },
        h("div", { style: { margin: "0 0 .6rem" } }, bar.el), out,
        h("h3", { class: "small" }, "Earlier exports"), earlier)));
}

function uploadCard(project) {
  const input = h("input", { id: "up-files", type: "file", multiple: true, accept: "image/*,.zip,.dcm", class: "sr-only", testid: "upload-input" });
  const zone = h("label", { for: "up-files", class: "dropzone", testid: "dropzone" },
    h("strong", {}, "Drop images or zip files here"), h("br"), h("span", { class: "muted" }, "or click to choose"));
  const bar = progressBar("upload-progress");
  bar.el.hidden = true;
  const summary = h("p", { class: "small", role: "status", "aria-live": "polite", testid: "upload-summary" });
  const tbody = h("tbody");
  const table = h("table", { class: "results", testid: "upload-results", hidden: true },
    h("thead", {}, h("tr", {}, h("th", {}, "File"), h("th", {}, "Result"), h("th", {}, "Details"))), tbody);

  async function upload(files) {
    files = [...files];
    if (!files.length) return;
    clear(tbody);
    table.hidden = false;
    bar.el.hidden = false;
    const totals = { created: 0, duplicates: 0, rejected: 0 };
    const batches = [];
    let cur = [], bytes = 0;
    for (const f of files) {
      if (cur.length && (cur.length >= BATCH_FILES || bytes + f.size > BATCH_BYTES)) { batches.push(cur); cur = []; bytes = 0; }
      cur.push(f); bytes += f.size;
    }
    if (cur.length) batches.push(cur);
    let done = 0;
    bar.set(0, `0 of ${files.length} files`);
    for (const batch of batches) {
      const form = new FormData();
      for (const f of batch) form.append("files", f, f.name);
      try {
        const { data } = await request("POST", `/projects/${project.id}/items`, { form });
        for (const c of data.created || []) { totals.created++; row(c.file, "created", `item #${c.id}`); }
        for (const d of data.duplicates || []) { totals.duplicates++; row(d.file, "duplicate", d.of == null ? "already in the project"
          : typeof d.of === "number" ? `same as item #${d.of}` : `same as ${d.of}`); }
        for (const r of data.rejected || []) { totals.rejected++; row(r.file, "rejected", `${r.reason}: ${r.message}`); }
      } catch (err) {
        for (const f of batch) { totals.rejected++; row(f.name, "rejected", `upload failed: ${err.message}`); }
      }
      done += batch.length;
      bar.set(done / files.length, `${done} of ${files.length} files`);
    }
    summary.textContent = `${totals.created} added · ${totals.duplicates} duplicates · ${totals.rejected} rejected`;
    toast(summary.textContent, totals.created ? "ok" : "info");
  }

  function row(file, status, detail) {
    tbody.append(h("tr", { testid: "upload-row", dataset: { file, status } },
      h("td", {}, file), h("td", { class: `status-${status}` }, status), h("td", { class: "small" }, detail)));
  }

  input.addEventListener("change", () => { upload(input.files); input.value = ""; });
  zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    zone.classList.remove("over");
    upload(ev.dataTransfer.files);
  });
  return h("section", { class: "card", "aria-labelledby": "up-title" }, h("h2", { id: "up-title" }, "Upload images"),
    input, zone, h("div", { style: { margin: ".6rem 0" } }, bar.el), summary, table);
}

function importCard(project) {
  const fmt = h("select", { id: "imp-format", testid: "import-format" }, FORMATS.map(([v, l]) => h("option", { value: v }, l)));
  const file = h("input", { id: "imp-file", type: "file", required: true, testid: "import-file" });
  const out = h("div", { testid: "import-result", role: "status", "aria-live": "polite" });
  const form = h("form", { class: "form-grid" },
    h("label", { for: "imp-format" }, "Format"), fmt,
    h("label", { for: "imp-file" }, "Annotation file"), file,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", testid: "import-submit" }, "Import")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!file.files.length) return;
    const body = new FormData();
    body.append("file", file.files[0], file.files[0].name);
    clear(out, h("p", { class: "muted" }, "Importing…"));
    try {
      const { data } = await request("POST", `/projects/${project.id}/import${qs({ format: fmt.value })}`, { form: body });
      clear(out, h("p", {}, h("strong", { testid: "import-updated" }, String(data.updated)), " images updated · ",
        `${data.unchanged} unchanged · ${data.unmatched_count} not matched`),
      (data.classes_added || []).length ? h("p", { class: "small" }, `New classes: ${data.classes_added.join(", ")}`) : null,
      (data.unmatched || []).length ? h("details", { class: "small" }, h("summary", {}, "Files not in the project"),
        h("ul", {}, data.unmatched.slice(0, 50).map((u) => h("li", {}, u)))) : null);
    } catch (err) {
      clear(out, h("p", { class: "notice error" }, err.message));
    }
  });
  return h("section", { class: "card", "aria-labelledby": "imp-title" }, h("h2", { id: "imp-title" }, "Import annotations"),
    h("p", { class: "muted small" }, "Labels attach to images already uploaded, matched by file name. Unknown classes are added."),
    form, out);
}

function exportCard(project) {
  const status = h("p", { class: "small", role: "status", testid: "export-status" });
  const download = async (fmt) => {
    status.textContent = `Preparing ${fmt}…`;
    try {
      const res = await request("GET", `/projects/${project.id}/export${qs({ format: fmt })}`, { raw: true });
      const cd = res.headers.get("Content-Disposition") || "";
      const m = /filename="?([^";]+)"?/.exec(cd);
      const name = m ? m[1] : `${project.name}-${fmt}`;
      const url = URL.createObjectURL(res.data);
      const a = h("a", { href: url, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      status.textContent = `Exported ${name} (${(res.data.size / 1024).toFixed(1)} KB).`;
    } catch (err) {
      status.textContent = "";
      showError(err, `Export ${fmt}`);
    }
  };
  return h("section", { class: "card", "aria-labelledby": "exp-title" }, h("h2", { id: "exp-title" }, "Export"),
    h("p", { class: "muted small" }, "Current labels with their provenance (human, model-confirmed, model)."),
    h("div", { class: "export-list" }, FORMATS.map(([v, l]) =>
      h("button", { type: "button", testid: `export-${v}`, onclick: () => download(v) }, l))),
    status);
}

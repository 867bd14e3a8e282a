// The conflict view: a save met a newer version (412 with different content).
// Shows both versions side by side; the labeler keeps the current one or saves theirs over it.

import { imageUrl } from "./api.js";
import { preview } from "./editor.js";
import { h } from "./ui.js";

function describe(d) {
  d = d || {};
  const parts = [];
  if ((d.labels || []).length) parts.push(d.labels.join(", "));
  if ((d.boxes || []).length) parts.push(`${d.boxes.length} boxes`);
  if ((d.polygons || []).length) parts.push(`${d.polygons.length} polygons`);
  return parts.join(" · ") || "no labels";
}

/** entry: an outbox entry in state "conflict"; size: [w, h] fallback; actions: {keepTheirs, useMine}. */
export function conflictView(entry, classes, size, { keepTheirs, useMine }) {
  const theirs = entry.theirs || {};
  const w = theirs.width || size[0];
  const hh = theirs.height || size[1];
  const col = (testid, title, data) => h("div", { class: "conflict-col", testid },
    h("h3", {}, title),
    preview(imageUrl(entry.itemId), w, hh, data || {}, classes, `${testid}-preview`),
    h("p", { class: "conflict-labels", testid: `${testid}-labels` }, describe(data)));
  return h("div", { class: "conflict card", role: "alertdialog", "aria-labelledby": "conflict-title", testid: "conflict-view" },
    h("h2", { id: "conflict-title" }, `${entry.fileName} changed while you were labelling it`),
    h("p", { class: "muted" }, `Someone saved version ${theirs.version} first. Choose which labels to keep.`),
    h("div", { class: "conflict-cols" },
      col("conflict-mine", "Yours (not saved)", entry.body),
      col("conflict-theirs", `Current (version ${theirs.version}${theirs.provenance ? `, ${theirs.provenance}` : ""})`,
        theirs.annotation)),
    h("div", { class: "actions" },
      h("button", { type: "button", testid: "conflict-keep-theirs", onclick: keepTheirs }, "Keep the current version ",
        h("kbd", {}, "K")),
      h("button", { type: "button", class: "primary", testid: "conflict-use-mine", onclick: useMine }, "Save mine over it ",
        h("kbd", {}, "M"))));
}

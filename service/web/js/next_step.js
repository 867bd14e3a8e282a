// What the loop still lacks, in plain words and numbers, for the empty states of Pending, Grids,
// Review and the Dashboard: the first model (human labels per class), the hold-out evidence that
// pre-labels need, the next model. Everything comes from what the API already returns:
// GET /readiness (labels per class and split, the next training), GET /policy, GET /model-versions.

import { get, rows } from "./api.js";
import { AUTO_POOLED_SHARE, fmtLevel, minEvidence } from "./policy.js";
import { fmtPct, h, progressBar } from "./ui.js";

/** {readiness, policy, model}: each null when its route fails (the lines that need it are left out). */
export async function loopState(project) {
  const [readiness, policy, versions] = await Promise.all([
    get(`/projects/${project.id}/readiness`).catch(() => null),
    get(`/projects/${project.id}/policy`).catch(() => null),
    get(`/projects/${project.id}/model-versions`).then(rows).catch(() => null)]);
  const model = versions ? versions.find((v) => v.is_current) || null : null;
  return { readiness, policy, model, versionsKnown: versions !== null };
}

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** The first model: which classes still lack human labels, and the fewest labels that make it trainable. */
export function firstModel(st) {
  const r = st.readiness, need = st.policy ? st.policy.min_labels_per_class : null;
  if (!r) return null;
  if (r.next_training && r.next_training.training_running) {
    return { id: "first-model", text: "The first model is training now; what it proposes follows when it is done." };
  }
  if (r.ready) {
    return { id: "first-model", text: "Enough labels for a first model: it trains on the next scheduled check "
      + "(or when a manager presses Train now on the Dashboard)." };
  }
  const counts = r.human_labels || {};
  const names = Object.keys(counts);
  if (need === null || names.length < 2) return { id: "first-model", text: `No model yet: ${(r.reasons || []).join("; ")}.` };
  const gaps = names.map((c) => Math.max(0, need - counts[c])).sort((a, b) => a - b);
  const togo = gaps[0] + gaps[1]; // the two classes nearest to the minimum
  const have = names.map((c) => `${c} ${Math.min(counts[c], need)} of ${need}`).join(", ");
  const lines = [`The first model trains once two classes have ${need} human labels each: ${have}. `
    + `At least ${plural(togo, "more label")} to go (hold-out labels do not count).`];
  if (r.unlabelled === 0) lines.push("No unlabelled images are left: upload more on Import / export.");
  return { id: "first-model", text: lines.join(" "), have: 2 * need - togo, need: 2 * need };
}

/** Hold-out evidence that pre-labels need (the calibration rule of learning/calibration.py), or null when met. */
export function evidence(st) {
  const r = st.readiness, p = st.policy;
  if (!r || !p) return null;
  const held = r.holdout_labels || {};
  const target = `${fmtPct(p.target_precision, 0)} precision`;
  if (p.calibration === "per_class") {
    const need = minEvidence(p.target_precision, p.delta);
    const short = Object.keys(r.human_labels || held).filter((c) => (held[c] || 0) < need);
    if (!short.length) return null;
    const have = Object.keys(r.human_labels || held).map((c) => `${c} ${held[c] || 0}`).join(", ");
    return { id: "evidence", text: `Pre-labels of a class start when ${need} of its hold-out images are labelled, `
      + `all right, to prove ${target} (δ ${fmtLevel(p.delta)}): ${have} so far.`,
    have: Math.max(...Object.values(held), 0), need };
  }
  const delta = p.delta * (p.calibration === "auto" ? AUTO_POOLED_SHARE : 1);
  const need = minEvidence(p.target_precision, delta);
  const have = Object.values(held).reduce((a, b) => a + b, 0);
  if (have >= need) return null;
  return { id: "evidence", text: `Pre-labels start when ${need} hold-out images are labelled, all right, to prove `
    + `${target} for all classes together: ${have} so far (${need - have} to go). Hold-out images come up now and then on `
    + "the Label page, tagged “hold-out”.", have, need };
}

/** The next model: new labels since the last training against the policy's trigger. */
export function nextModel(st) {
  const nt = st.readiness && st.readiness.next_training;
  if (!nt) return null;
  if (nt.training_running) return { id: "next-model", text: "A new model is training now." };
  if (nt.labels_needed != null) {
    const left = Math.max(0, nt.labels_needed - nt.labels);
    return { id: "next-model", text: `The next model trains after ${nt.labels_needed} new labels: ${nt.labels} so far`
      + (left ? ` (${left} to go).` : " (due now)."), have: nt.labels, need: nt.labels_needed };
  }
  if (nt.minutes_needed != null) return { id: "next-model", text: `The next model trains every ${nt.minutes_needed} minutes when there are new labels.` };
  return { id: "next-model", text: "Automatic retraining is off: a manager trains from the Dashboard." };
}

/** What is missing on the way to pre-labels: the first model, else the hold-out evidence. */
export function missing(st) {
  if (!st.versionsKnown) return [];
  return [st.model ? evidence(st) : firstModel(st)].filter(Boolean);
}

/** A notice: the `lead` sentence, then each line (with its progress bar when it counts something). */
export function whyBlock(testid, lead, lines) {
  return h("div", { class: "notice why", testid }, h("p", { class: "why-lead" }, lead),
    lines.filter(Boolean).map((l) => {
      const row = h("div", { class: "why-line", testid: `why-${l.id}` }, h("p", {}, l.text));
      if (l.need) {
        const bar = progressBar(`why-${l.id}-bar`);
        bar.set(Math.min(1, l.have / l.need), `${Math.min(l.have, l.need)} of ${l.need}`);
        row.append(bar.el);
      }
      return row;
    }));
}

/** Pending with nothing to show (and no filter on): why no proposals, and how far they are. */
export function pendingEmpty(st) {
  const lines = st.model ? [evidence(st), nextModel(st)] : [firstModel(st)];
  const lead = !st.model ? "Nothing pending: proposals come from a model, and there is none yet."
    : evidence(st) ? "Nothing pending: the current model cannot prove its pre-labels yet."
      : "Nothing pending: no image clears the current model's proven threshold right now; a newer model may propose more.";
  return whyBlock("pending-why", lead, lines);
}

/** Grids with no page: pages come from clustering the unlabelled images. */
export function gridsEmpty(st) {
  const r = st.readiness;
  if (r && r.unlabelled === 0) return whyBlock("grids-why", "No grid pages: every image is labelled or pending.", []);
  return whyBlock("grids-why", "No grid pages right now: they appear once the unlabelled images are clustered, which "
    + "runs in the background after an upload and after each new model."
    + (st.model ? "" : " Until the first model, a page has no suggested class: you pick it."),
  [st.model ? nextModel(st) : firstModel(st)]);
}

/** Review with no open flag: flags come from the model's check of the labels after each training. */
export function reviewEmpty(st) {
  return whyBlock("review-why", st.model
    ? "No open flags: the last check of the labels found nothing to look at again. The next check follows the next model."
    : "No flags yet: they come from the model's check of the labels, after each training.",
  [st.model ? nextModel(st) : firstModel(st)]);
}

// Internal names in plain words, and numbers with the digits that matter (the Dashboard's words).

/** Where a human label was made (Annotation.origin). */
const ORIGINS = {
  "queue:strategy": "model's picks", "queue:holdout": "hold-out draws", "queue:audit": "audits of auto-accepted",
  "queue:random": "random draws", grid: "grid pages", pending: "corrections in Pending", import: "imports",
  undo: "undos", review: "review fixes", edit: "edits", rename: "class renames", "annotate-clean": "automatic annotation",
  auto: "auto-accepted",
};

/** What a job does (Job.kind). */
const JOBS = {
  train: "training", infer: "pre-labelling", hard_examples: "check of the labels", cluster: "grid pages",
  cold_start: "first picks", annotate: "automatic annotation", scan_folder: "folder scan", sleep: "test job",
  export: "export", import: "import",
};

/** Item statuses. */
const STATUSES = { labelled: "labelled", proposed: "pending", unlabelled: "unlabelled", skipped: "skipped", review: "in review" };

const plain = (key) => String(key).replace(/^queue:/, "").replace(/[_-]+/g, " ").replace(/\bholdout\b/g, "hold-out");

export const originWord = (key) => ORIGINS[key] || plain(key);
export const jobWord = (kind) => JOBS[kind] || plain(kind);
export const statusWord = (status) => STATUSES[status] || plain(status);
/** A metric's key ("holdout_macro_f1") as words ("hold-out macro f1"). */
export const metricWord = (key) => plain(key);

/**
 * A score threshold with three decimals, more when three would round a value below 1 up to 1
 * (0.9996 is not 1: a threshold of 1 pre-labels nothing), trailing zeros off: 0.81, 0.999, 0.9996, 1.
 */
export function fmtThreshold(x) {
  if (x === null || x === undefined || Number.isNaN(Number(x))) return "–";
  const v = Number(x);
  let digits = 3;
  while (digits < 8 && v < 1 && Number(v.toFixed(digits)) >= 1) digits += 1;
  return String(Number(v.toFixed(digits)));
}

/** The kinds of label in "Labels over time" (GET /activity's series). */
const LABEL_KINDS = { human: "by people", confirmed: "confirmed proposals", auto_accepted: "auto-accepted" };
export const labelKindWord = (key) => LABEL_KINDS[key] || plain(key);

/** Where a model version's coverage was counted from (GET /activity's coverage_from). */
const COVERAGE_FROM = { inference: "from its last pre-labelling run", predictions: "counted from its predictions" };
export const coverageFromWord = (key) => (key ? COVERAGE_FROM[key] || plain(key) : "it has not pre-labelled yet");

// The retraining policy's fields for the Settings page (pure: no DOM, no fetch).
//
// GROUPS says what each field is, its input type, its one line of help, and its valid range,
// mirroring learning/policy.py Policy.problems() so a mistake shows as it is typed. The server
// stays the judge: the page sends what is typed and shows the server's answer under the field.
// minEvidence() is learning/calibration.py min_evidence_for (the Clopper-Pearson rule).

const MAX_LABELS = 1_000_000, MAX_MINUTES = 525_600, MAX_BATCH = 10_000, MAX_EPOCHS = 1_000, MAX_IMAGE = 2_048;
const MIN_TILE = 64, MAX_TILE = 4_096;
// learning/calibration_auto.py: auto splits delta between the pooled statement and the per-class ones
export const AUTO_POOLED_SHARE = 0.8, AUTO_PER_CLASS_SHARE = 0.1, AUTO_MIN_CLASS_ITEMS = 20;

/** Choices the policy allows (learning/policy.py and learning/query.py); the server's list wins when it sends one. */
export const CHOICES = {
  algorithm: ["fast", "precise"],
  calibration: ["auto", "per_class", "pooled"],
  features: ["stages", "final"],
  strategy: ["margin", "entropy", "least_confidence", "margin_diverse", "entropy_diverse", "margin_balanced",
    "margin_explore", "multilabel_uncertainty", "multilabel_entropy", "cold_start", "random"],
};

const isInt = (v) => typeof v === "number" && Number.isInteger(v);
const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const big = (n) => n.toLocaleString("en-US");

// key -> [label, type, help, rule text (as the server words it), check(value) -> ok]
// types: int, int?, float, float? (? = empty means off / none), bool, bool? (auto/on/off), choice, strategy
const F = {
  min_labels_per_class: ["Labels per class before training", "int",
    "At least two classes need this many human labels before the first model.",
    `an integer >= 1 and at most ${big(MAX_LABELS)}`, (v) => isInt(v) && v >= 1 && v <= MAX_LABELS],
  retrain_every_labels: ["Retrain every N new labels", "int?", "Empty switches this trigger off.",
    `an integer >= 1 or None (at most ${big(MAX_LABELS)})`, (v) => v === null || (isInt(v) && v >= 1 && v <= MAX_LABELS)],
  retrain_every_minutes: ["Retrain every T minutes", "float?",
    "Empty switches this trigger off; time alone never retrains on unchanged labels.",
    `a number > 0 or None (at most ${big(MAX_MINUTES)}: a year)`, (v) => v === null || (isNum(v) && v > 0 && v <= MAX_MINUTES)],
  algorithm: ["Algorithm", "choice", "fast: a head on cached embeddings (seconds); precise: fine-tunes the backbone (minutes).",
    "one of fast, precise", (v) => CHOICES.algorithm.includes(v)],
  epochs: ["Epochs (precise)", "int", "Training passes over the labels; only the precise algorithm uses them.",
    `an integer >= 1 and at most ${big(MAX_EPOCHS)}`, (v) => isInt(v) && v >= 1 && v <= MAX_EPOCHS],
  image_size: ["Model input size (precise)", "int?", "Pixels a side; empty: the backbone's default.",
    `an integer >= 16 or None (at most ${big(MAX_IMAGE)})`, (v) => v === null || (isInt(v) && v >= 16 && v <= MAX_IMAGE),
    "backbone default"],
  tile_size: ["Tile size (detection)", "int",
    "Images larger than this many pixels a side are trained and pre-labelled in tiles at full resolution.",
    `an integer >= ${MIN_TILE} and at most ${big(MAX_TILE)}`, (v) => isInt(v) && v >= MIN_TILE && v <= MAX_TILE],
  tile_overlap: ["Tile overlap (detection)", "float", "Share of a tile its neighbour repeats, e.g. 0.2.",
    "between 0 and 0.9", (v) => isNum(v) && v >= 0 && v <= 0.9],
  background_share: ["Background tiles (detection)", "float",
    "Share of training tiles drawn away from labelled objects, to teach what clean image looks like.",
    "between 0 and 0.9", (v) => isNum(v) && v >= 0 && v <= 0.9],
  features: ["Image features", "choice",
    "stages: top features and three stages below (better on images unlike ImageNet); final: top features only.",
    "one of stages, final", (v) => CHOICES.features.includes(v)],
  mirror: ["Mirror images are the same class", "bool",
    "Switch off when classes differ by the way they face (left/right arrows).", "true or false", (v) => typeof v === "boolean"],
  semi_supervised: ["Learn from unlabelled images", "bool?", "auto: on for fast, off for precise.",
    "true, false or null", (v) => v === null || typeof v === "boolean"],
  target_precision: ["Target pre-label precision", "float", "Share of pre-labels that must be right, e.g. 0.95.",
    "strictly between 0 and 1", (v) => isNum(v) && v > 0 && v < 1],
  delta: ["Risk δ (1 − confidence)", "float", "The proven precision holds with probability 1 − δ.",
    "strictly between 0 and 1", (v) => isNum(v) && v > 0 && v < 1],
  calibration: ["Calibration", "choice",
    "auto: all classes together as soon as possible, each class alone as its evidence grows; pooled: one threshold; per_class: each class proves its own.",
    "one of auto, per_class, pooled", (v) => CHOICES.calibration.includes(v)],
  holdout_share: ["Hold-out share", "float", "Share of labels drawn at random to prove precision (never trained on).",
    "strictly between 0 and 1", (v) => isNum(v) && v > 0 && v < 1],
  holdout_min: ["Hold-out labels to reach early", "int",
    "The first this many hold-out labels are drawn at 1.5 times the share, then none until the share catches up; 0: the plain share.",
    `an integer >= 0 and at most ${big(MAX_LABELS)}`, (v) => isInt(v) && v >= 0 && v <= MAX_LABELS],
  auto_accept: ["Auto-accept confident pre-labels", "bool", "Proposals above the proven threshold skip Pending (audited).",
    "true or false", (v) => typeof v === "boolean"],
  audit_share: ["Audit share", "float", "Share of auto-accepted pre-labels sent back to people.",
    "between 0 and 1", (v) => isNum(v) && v >= 0 && v <= 1],
  strategy: ["Query strategy", "strategy", "How the queue picks the next image to label (margin: where the model hesitates).",
    "a known query strategy", (v) => CHOICES.strategy.includes(v)],
  batch_size: ["Query batch size", "int", "Images one query round selects.",
    `an integer >= 1 and at most ${big(MAX_BATCH)}`, (v) => isInt(v) && v >= 1 && v <= MAX_BATCH],
  grid_min_confidence: ["Lowest model confidence on a page", "float",
    "Images the model is less sure of are labelled one by one; 0 puts every image on a page.",
    "between 0 (inclusive) and 1", (v) => isNum(v) && v >= 0 && v < 1],
  grid_purity: ["Expected page purity", "float?",
    "Pages take the images most likely right until this share is expected in the page's class; empty: off.",
    "strictly between 0 and 1 or None", (v) => v === null || (isNum(v) && v > 0 && v < 1)],
};

/** [group id, title, field keys]: the order the page shows them in. */
export const GROUPS = [
  ["train-when", "When to train", ["min_labels_per_class", "retrain_every_labels", "retrain_every_minutes"]],
  ["train-what", "What to train", ["algorithm", "epochs", "image_size", "features", "mirror", "semi_supervised",
    "tile_size", "tile_overlap", "background_share"]],
  ["sure", "How sure pre-labels must be", ["target_precision", "delta", "calibration", "holdout_share", "holdout_min",
    "auto_accept", "audit_share"]],
  ["next", "What people see next", ["strategy", "batch_size"]],
  ["grids", "Grids", ["grid_min_confidence", "grid_purity"]],
];

/** Take the server's lists of allowed values (`{calibration: [...], ...}`) over the ones above. */
export function useChoices(choices) {
  for (const [key, list] of Object.entries(choices || {})) if (Array.isArray(list) && list.length) CHOICES[key] = list;
}

/** {label, type, help, rule, check} of a field; a field this page does not know gets a plain one. */
export function fieldOf(key, value) {
  const f = F[key];
  if (f) {
    const rule = f[1] === "choice" ? `one of ${CHOICES[key].join(", ")}` : f[3];
    return { label: f[0], type: f[1], help: f[2], rule, check: f[4], empty: f[5] || "off" };
  }
  const type = typeof value === "boolean" ? "bool" : typeof value === "number"
    ? (Number.isInteger(value) ? "int" : "float") : value === null ? "float?" : "text";
  return { label: key.replace(/_/g, " "), type, help: "", rule: "", check: () => true, empty: "off" };
}

export const knownKeys = () => Object.keys(F);

/** The server's sentence for a bad value ("epochs must be an integer >= 1 ..., got 0"), or "" when fine. */
export function problem(key, value) {
  const f = fieldOf(key, value);
  if (Number.isNaN(value)) return `${key} must be a number`;
  if (f.check(value)) return "";
  const shown = value === null ? "None" : typeof value === "string" ? `'${value}'` : String(value); // as Python says it
  return `${key} must be ${f.rule}, got ${shown}`;
}

/** A field's value in words: choices and numbers as typed, on/off, and what an empty optional means. */
export function show(key, value) {
  const f = fieldOf(key, value);
  if (value === null || value === undefined) return f.type === "bool?" ? "auto" : f.empty;
  if (typeof value === "boolean") return value ? "on" : "off";
  return String(value);
}

/**
 * Fewest hold-out items whose one-sided Clopper-Pearson lower bound at level `delta` reaches
 * `target` when `errors` of them are wrong (learning.calibration.min_evidence_for): the smallest
 * n with P(Binomial(n, target) >= n - errors) <= delta. With no errors: target^n <= delta,
 * n = ceil(ln δ / ln target): 59 at 0.95 / 0.05, 93 with one error, 124 with two.
 */
export function minEvidence(target, delta, errors = 0) {
  if (!(target > 0 && target < 1 && delta > 0 && delta < 1)) return null;
  const lt = Math.log(target), lq = Math.log1p(-target), ld = Math.log(delta);
  for (let n = errors + 1; n < 10_000_000; n++) {
    let logC = 0, total = 0; // sum over j wrong of C(n, j) q^j t^(n-j), j = 0..errors
    for (let j = 0; j <= errors; j++) {
      if (j > 0) logC += Math.log(n - j + 1) - Math.log(j);
      total += Math.exp(logC + j * lq + (n - j) * lt - ld);
    }
    if (total <= 1 + 1e-12) return n;
  }
  return null;
}

/**
 * Labels a project has made when its hold-out reaches `n` (learning.policy.holdout_draw_share):
 * the first `holdoutMin` hold-out labels come at 1.5 times the share (at most 50%); past them
 * the hold-out grows at the plain share.
 */
export function labelsForHoldout(n, share, holdoutMin) {
  if (!(share > 0 && share < 1) || !(n > 0)) return null;
  if (holdoutMin > 0 && n <= holdoutMin) return Math.ceil(n / Math.max(share, Math.min(0.5, 1.5 * share)));
  return Math.ceil(n / share);
}

/**
 * What the calibration settings mean, as sentences: how many hold-out images, all right, prove
 * the target, pooled (all classes together) or per class. `nClasses`: the project's classes
 * (auto splits its per-class share of δ over them). Null when target or δ is out of range.
 */
export function calibrationPreview({ target, delta, calibration, holdoutShare, holdoutMin, nClasses }) {
  const t = fmtLevel(target), d = fmtLevel(delta);
  if (minEvidence(target, delta) === null) return null;
  const labels = (n, all = "") => {
    const l = labelsForHoldout(n, holdoutShare, holdoutMin);
    return l === null ? "" : ` (about ${big(l)} labels${all} at a ${fmtLevel(holdoutShare * 100)}% hold-out share)`;
  };
  const more = (dl) => `; with one wrong ${minEvidence(target, dl, 1)}, with two ${minEvidence(target, dl, 2)}`;
  if (calibration === "pooled") {
    const n = minEvidence(target, delta);
    return [`At target ${t} and δ ${d} the hold-out needs at least ${n} images, all right, before any pre-label${more(delta)}.`,
      `Pooled: one threshold for all classes together${labels(n)}; a single class is never proven alone.`];
  }
  if (calibration === "per_class") {
    const n = minEvidence(target, delta);
    return [`At target ${t} and δ ${d} a class needs at least ${n} hold-out images, all right, to be certified alone${more(delta)}.`,
      `Per class: each of the ${nClasses} classes proves its own threshold on its own ${n}` +
      `${labels(n * Math.max(1, nClasses), " in all")}; all classes together are never pooled.`];
  }
  const dp = delta * AUTO_POOLED_SHARE, dc = (delta * AUTO_PER_CLASS_SHARE) / Math.max(1, nClasses);
  const np = minEvidence(target, dp), nc = minEvidence(target, dc);
  return [`At target ${t} and δ ${d}, auto pre-labels once the hold-out has at least ${np} images, all right, of the classes ` +
      `it has seen predicted ${AUTO_MIN_CLASS_ITEMS} times or more (pooled, δ ${fmtLevel(dp)})${labels(np)}.`,
    `A class is also certified alone with at least ${nc} of its own, all right (δ split over ${nClasses} classes: ${fmtLevel(dc)}).`];
}

/** 0.95 -> "0.95", 0.001666 -> "0.00167": enough digits to tell the setting, no float noise. */
export function fmtLevel(x) {
  return String(Number(Number(x).toPrecision(3)));
}

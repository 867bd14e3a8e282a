"""Detection benchmark on canvases composed from Fashion-MNIST items (not collected by pytest).

Each 160x160 canvas holds 1-4 objects of 3-5 Fashion-MNIST classes, 20-60 px, at random
places (overlap IoU < 0.1), on a noisy background with clutter (small fragments of items of
other classes, lines); boxes are exact (the tight box of the pasted item's pixels). For each
budget of labelled canvases it trains the detector adapter, then reports:

* mAP@0.5 (pycocotools COCOeval, ``stats[1]``) on a held-out test set of canvases;
* box calibration on a separate hold-out set (learning.box_calibration, target/delta), then on
  the test set: box precision of the proposals, the share of canvases proposed, and the share
  of canvases proposed complete and correct.

``--hard-examples N``: N labelled canvases, 5% of their boxes deleted and as many spurious
boxes added; every canvas predicted by a cross-fitted detector (learning.crossfit) and
flagged (learning.hard_examples.detection_flags). Reports, per flag kind, the share of the
deleted (``false detection``) / added (``missed detection``) boxes found in the top 10% and
20% of canvases ranked by that kind's flag score; and the product's own flag decision (the
cuts and per-run cap of the detection hard-example scan, service.loop.detect): its precision
and recall per kind, and (first, on the same canvases with their true labels: ``--no-clean``
skips it) the share of correct canvases it flags.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python lab/benchmarks/bench_detection.py \
        --budgets 100,300 --epochs 12 --holdout 200 --test 200 --out bench-detection.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.fashion import FASHION_CLASSES, FASHION_DIR, load_fashion  # noqa: E402
from learning.adapters.base import FitConfig, LabelledImages  # noqa: E402
from learning.adapters.detector import DetectorAdapter  # noqa: E402
from learning.box_calibration import ImageBoxes, box_correct, calibrate_boxes, map50, propose  # noqa: E402
from learning.hard_examples import iou_matrix  # noqa: E402

DEFAULT_CLASSES = (1, 5, 8)  # trouser, sandal, bag


def make_canvases(n: int, seed: int, class_ids: tuple[int, ...], size: int = 160,
                  pool: tuple[np.ndarray, np.ndarray] | None = None) -> list[tuple[Image.Image, dict]]:
    x, y = pool if pool is not None else load_fashion(FASHION_DIR, 20_000, seed=1234)
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(y == c) for c in range(10)}
    clutter_ids = np.flatnonzero(~np.isin(y, class_ids))
    out = []
    for _ in range(n):
        bg = rng.normal(rng.uniform(40, 110), 12, (size, size, 1)) + rng.normal(0, 6, (size, size, 3))
        canvas = np.clip(bg, 0, 255)
        for _ in range(int(rng.integers(2, 6))):  # clutter: small fragments, lines
            if rng.random() < 0.6:
                frag = x[rng.choice(clutter_ids)][4:24, 4:24].astype(np.float64)
                s = int(rng.integers(6, 14))
                frag = np.asarray(Image.fromarray(frag.astype(np.uint8)).resize((s, s)), dtype=np.float64) / 255
                px, py = rng.integers(0, size - s, 2)
                region = canvas[py:py + s, px:px + s]
                canvas[py:py + s, px:px + s] = region * (1 - frag[..., None]) + 230 * frag[..., None]
            else:
                r, c0 = int(rng.integers(0, size)), rng.integers(0, size, 2)
                canvas[r, min(c0):max(c0) + 1] = rng.uniform(150, 255)
        boxes: list[list[float]] = []
        anns = []
        for _ in range(int(rng.integers(1, 5))):
            c = int(rng.choice(class_ids))
            item = x[rng.choice(by_class[c])]
            s = int(rng.integers(20, 61))
            big = np.asarray(Image.fromarray(item).resize((s, s), Image.Resampling.BILINEAR), dtype=np.float64)
            ys, xs = np.nonzero(big > 25)
            if not len(ys):
                continue
            for _try in range(20):
                px, py = (int(v) for v in rng.integers(0, size - s + 1, 2))
                box = [px + xs.min(), py + ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                if not boxes or iou_matrix(np.array([box]), np.array(boxes)).max() < 0.1:
                    break
            else:
                continue
            alpha = big[..., None] / 255.0
            tint = rng.uniform(180, 255, 3)
            canvas[py:py + s, px:px + s] = canvas[py:py + s, px:px + s] * (1 - alpha) + tint * alpha
            boxes.append([float(v) for v in box])
            anns.append({"label": FASHION_CLASSES[c], "bbox": [float(v) for v in box]})
        out.append((Image.fromarray(canvas.astype(np.uint8)), {"boxes": anns, "polygons": []}))
    return out


def to_image_boxes(anns: list[dict], classes: list[str], with_scores: bool) -> ImageBoxes:
    return ImageBoxes(np.array([a["bbox"] for a in anns]).reshape(-1, 4),
                      np.array([classes.index(a["label"]) for a in anns], dtype=np.int64),
                      np.array([a["score"] for a in anns]) if with_scores else None)


def run_budget(n: int, args: argparse.Namespace, classes: list[str], pool: tuple, holdout: list, test: list) -> dict:
    train = make_canvases(n, args.seed, tuple(args.class_ids), pool=pool)
    labels = np.empty(n, dtype=object)
    labels[:] = [a for _, a in train]
    adapter = DetectorAdapter(classes, image_size=args.image_size, num_threads=args.threads)
    cfg = FitConfig(algorithm="precise", epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    t0 = time.perf_counter()
    ho = LabelledImages([im for im, _ in holdout], np.empty(len(holdout), dtype=object))
    adapter.fit(LabelledImages([im for im, _ in train], labels), ho, config=cfg)
    fit_s = time.perf_counter() - t0
    assert adapter.holdout_predictions is not None and adapter.holdout_predictions.boxes is not None
    hp = [to_image_boxes(b, classes, True) for b in adapter.holdout_predictions.boxes]
    hg = [to_image_boxes(a["boxes"], classes, False) for _, a in holdout]
    row: dict = {"labelled": n, "epochs": args.epochs, "train_seconds": round(fit_s, 1)}
    t1 = time.perf_counter()
    preds = adapter.predict([im for im, _ in test]).boxes
    assert preds is not None
    row["predict_seconds_per_image"] = round((time.perf_counter() - t1) / len(test), 4)
    row["map50"] = round(map50([to_image_boxes(p, classes, True) for p in preds],
                               [to_image_boxes(a["boxes"], classes, False) for _, a in test], len(classes)), 4)
    for recall in args.recalls:
        cal = calibrate_boxes(hp, hg, len(classes), target=args.target, delta=args.delta, mode=args.calibration,
                              recall=recall)
        row[f"recall={recall}"] = proposals(cal, preds, test, classes)
    return row


def proposals(cal: Any, preds: list, test: list, classes: list[str]) -> dict:
    """Box precision, share proposed and share complete-and-correct of the test canvases."""
    n_prop = n_boxes = n_right = n_complete = 0
    for p, (_, a) in zip(preds, test, strict=True):
        pb, gb = to_image_boxes(p, classes, True), to_image_boxes(a["boxes"], classes, False)
        ok, keep = propose(pb, cal.thresholds, cal.possible)
        if not ok:
            continue
        kept = ImageBoxes(pb.boxes[keep], pb.labels[keep], np.asarray(pb.scores)[keep])
        right = box_correct(kept, gb)
        n_prop += 1
        n_boxes += len(kept)
        n_right += int(right.sum())
        n_complete += int(bool(right.all()) and int(right.sum()) == len(gb))
    return {"thresholds": dict(zip(classes, cal.thresholds, strict=True)), "possible": round(cal.possible, 4),
            "holdout_images_proposed": cal.images_proposed, "holdout_complete_correct": cal.images_complete_correct,
            "test_canvases": len(test), "proposed_canvases": n_prop, "proposed_share": round(n_prop / len(test), 4),
            "proposed_boxes": n_boxes, "box_precision": round(n_right / n_boxes, 4) if n_boxes else None,
            "complete_correct_share_of_proposed": round(n_complete / n_prop, 4) if n_prop else None,
            "complete_correct_share_of_all": round(n_complete / len(test), 4)}


def corrupt(canvases: list[tuple[Image.Image, dict]], share: float, seed: int, class_names: list[str]
            ) -> tuple[list[dict], list[tuple[int, dict]], list[tuple[int, dict]]]:
    """Delete ``share`` of all boxes and add as many spurious ones (random class and size 20-60 px,
    overlapping no box, IoU < 0.1) at random; returns (labels, deleted, added) with (canvas, box)."""
    rng = np.random.default_rng(seed)
    labels = [{"boxes": [dict(b) for b in a["boxes"]], "polygons": []} for _, a in canvases]
    where = [(i, j) for i, a in enumerate(labels) for j in range(len(a["boxes"]))]
    n = int(round(share * len(where)))
    gone = {where[k] for k in rng.choice(len(where), n, replace=False)}
    deleted = [(i, labels[i]["boxes"][j]) for i, j in sorted(gone)]
    for i, a in enumerate(labels):
        a["boxes"] = [b for j, b in enumerate(a["boxes"]) if (i, j) not in gone]
    added: list[tuple[int, dict]] = []
    while len(added) < n:
        i = int(rng.integers(len(labels)))
        s = int(rng.integers(20, 61))
        box = [float(v) for v in (*rng.integers(0, 160 - s + 1, 2), s, s)]
        truth = [b["bbox"] for b in canvases[i][1]["boxes"]] + [b["bbox"] for b in labels[i]["boxes"]]
        if truth and iou_matrix(np.array([box]), np.array(truth)).max() >= 0.1:
            continue
        b = {"label": class_names[int(rng.integers(len(class_names)))], "bbox": box}
        labels[i]["boxes"].append(b)
        added.append((i, b))
    return labels, deleted, added


def crossfit_boxes(canvases: list[tuple[Image.Image, dict]], labels: list[dict], args: argparse.Namespace,
                   classes: list[str]) -> tuple[list[ImageBoxes], list[ImageBoxes], float]:
    """Out-of-sample boxes of every canvas (a ``--folds`` cross-fitted detector on ``labels``):
    ``(preds, labelled boxes, seconds)``, one :class:`ImageBoxes` per canvas each."""
    from learning.crossfit import cross_fit

    data = np.empty(len(labels), dtype=object)
    data[:] = labels
    cfg = FitConfig(algorithm="precise", epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    t0 = time.perf_counter()
    shown = [-1]

    def progress(f: float, msg: str) -> None:  # every 5% to stderr: how far a slow run got
        if int(f * 20) > shown[0]:
            shown[0] = int(f * 20)
            print(f"crossfit {f:.0%} after {time.perf_counter() - t0:.0f} s: {msg}", file=sys.stderr, flush=True)

    pred = cross_fit(lambda: DetectorAdapter(classes, image_size=args.image_size, num_threads=args.threads),
                     LabelledImages([im for im, _ in canvases], data), config=cfg, folds=args.folds, seed=args.seed,
                     progress=progress)
    seconds = time.perf_counter() - t0
    assert pred.boxes is not None
    return ([to_image_boxes(p, classes, True) for p in pred.boxes],
            [to_image_boxes(a["boxes"], classes, False) for a in labels], seconds)


def product_flags(preds: list[ImageBoxes], gts: list[ImageBoxes], classes: list[str],
                  cuts: tuple[float, float] | None = None, cap_share: float | None = None) -> dict[str, Any]:
    """The product's flag decision per canvas, as the detection hard-example scan makes it
    (:func:`service.loop.detect.flag_hard_examples`): ``detection_flags`` at
    :func:`service.loop.detect.flag_cuts` (no certified threshold, no reviewer verdict yet:
    trust 1), then per kind at most ``max(FLAG_MIN, FLAG_SHARE * canvases)`` canvases, most
    suspicious first. Returns ``{"cuts": ..., kind: {"cut": {canvas: [Flag]}, "capped": {...}}}``.
    ``cuts`` (missed below, false above) and ``cap_share`` replace the product's, to compare."""
    from learning.hard_examples import FALSE_DETECTION, MISSED_DETECTION, detection_flags
    from service.loop.detect import FLAG_MIN, FLAG_SHARE, flag_cuts

    low, high = flag_cuts(None, classes, 1.0)
    if cuts is not None:
        low, high = cuts[0], np.full(len(classes), cuts[1])
    out: dict[str, Any] = {"cuts": {"missed_below": low, "false_above": float(np.max(high))}}
    cap = max(FLAG_MIN, int((FLAG_SHARE if cap_share is None else cap_share) * len(preds)))
    for kind in (FALSE_DETECTION, MISSED_DETECTION):
        cut: dict[int, list] = {}
        for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
            mine = [f for f in detection_flags(p.boxes, np.asarray(p.scores), p.labels, g.boxes, g.labels,
                                               missed_below=low, false_above=high) if f.kind == kind]
            if mine:
                cut[i] = mine
        ranked = sorted(cut, key=lambda i: (-max(f.score for f in cut[i]), i))
        out[kind] = {"cut": cut, "capped": {i: cut[i] for i in ranked[:cap]}}
    out["cap"] = cap
    return out


def _found(kind: str, box: dict, f: Any, classes: list[str]) -> bool:
    """Whether flag ``f`` of ``kind`` finds the corrupted ``box``."""
    from learning.hard_examples import FALSE_DETECTION

    if kind == FALSE_DETECTION:  # the model's confident box where a box was deleted
        return bool(f.detail["label"] == classes.index(box["label"]) and iou_matrix(
            np.array([f.detail["box"]]), np.array([box["bbox"]]))[0, 0] >= 0.5)
    return bool(f.detail["box"] == box["bbox"])  # the spurious box itself is flagged missed


def flag_figures(flags: dict[str, Any], n: int, truth: dict[str, list[tuple[int, dict]]], classes: list[str]
                 ) -> dict[str, Any]:
    """Per kind and decision (``cut``: every canvas the cuts flag; ``capped``: the scan's cap per
    run too): canvases flagged, and against ``truth`` (kind -> corrupted (canvas, box)) the
    precision and recall by canvas (a flagged canvas holding a corruption of that kind) and by
    box (a flagged box that finds one); the share of untouched canvases flagged (any kind)."""
    row: dict[str, Any] = {}
    touched = {i for boxes in truth.values() for i, _ in boxes}
    clean = [i for i in range(n) if i not in touched]
    for decision in ("cut", "capped"):
        anyflag: set[int] = set()
        for kind, bad in truth.items():
            got: dict[int, list] = flags[kind][decision]
            anyflag |= set(got)
            key = f"{kind} ({decision})"
            row[f"{key}: canvases flagged"] = len(got)
            if not bad:
                continue
            bad_canvases = {i for i, _ in bad}
            boxes_flagged = [(i, f) for i, fl in got.items() for f in fl]
            right = sum(any(_found(kind, b, f, classes) for j, b in bad if j == i) for i, f in boxes_flagged)
            found = sum(any(_found(kind, b, f, classes) for f in got.get(i, [])) for i, b in bad)
            row[f"{key}: canvas precision"] = round(len(set(got) & bad_canvases) / len(got), 4) if got else None
            row[f"{key}: canvas recall"] = round(len(set(got) & bad_canvases) / len(bad_canvases), 4)
            row[f"{key}: box precision"] = round(right / len(boxes_flagged), 4) if boxes_flagged else None
            row[f"{key}: box recall"] = round(found / len(bad), 4)
        row[f"untouched canvases flagged ({decision})"] = round(len(anyflag & set(clean)) / max(1, len(clean)), 4)
    row["untouched canvases"] = len(clean)
    return row


def run_hard_examples(args: argparse.Namespace, classes: list[str], pool: tuple) -> dict:
    """Cross-fitted false/missed detection flags against deleted/added boxes (the ranking at
    ``--cut``, and the product's decision: :func:`product_flags`); with ``--clean`` first the
    same canvases with their true labels (the share of correct canvases flagged)."""
    from learning.hard_examples import FALSE_DETECTION, MISSED_DETECTION, detection_flags

    n = args.hard_examples
    canvases = make_canvases(n, args.seed, tuple(args.class_ids), pool=pool)
    row: dict[str, Any] = {"canvases": n, "folds": args.folds, "epochs": args.epochs}
    if args.clean:
        truth_labels = [{"boxes": [dict(b) for b in a["boxes"]], "polygons": []} for _, a in canvases]
        preds, gts, secs = crossfit_boxes(canvases, truth_labels, args, classes)
        pf = product_flags(preds, gts, classes)
        both = set(pf[FALSE_DETECTION]["cut"]) | set(pf[MISSED_DETECTION]["cut"])
        capped = set(pf[FALSE_DETECTION]["capped"]) | set(pf[MISSED_DETECTION]["capped"])
        row["no corruption"] = {
            "boxes": sum(len(a["boxes"]) for a in truth_labels), "crossfit_seconds": round(secs, 1),
            "cuts": pf["cuts"], "cap per kind": pf["cap"],
            "canvases flagged (cut)": round(len(both) / n, 4), "canvases flagged (capped)": round(len(capped) / n, 4),
            **{f"{k} (cut): canvases flagged": len(pf[k]["cut"]) for k in (FALSE_DETECTION, MISSED_DETECTION)}}
        print(json.dumps({"no corruption": row["no corruption"]}), flush=True)
        clean_sets = (preds, gts)
    labels, deleted, added = corrupt(canvases, args.corrupt_share, args.seed + 7, classes)
    preds, gts, fit_s = crossfit_boxes(canvases, labels, args, classes)
    flags = [detection_flags(p.boxes, np.asarray(p.scores), p.labels, g.boxes, g.labels, score_threshold=args.cut)
             for p, g in zip(preds, gts, strict=True)]
    row |= {"boxes_after": sum(len(a["boxes"]) for a in labels), "deleted": len(deleted), "added": len(added),
            "cut": args.cut, "crossfit_seconds": round(fit_s, 1)}
    for kind, truth in ((FALSE_DETECTION, deleted), (MISSED_DETECTION, added)):
        score = np.array([max((f.score for f in fl if f.kind == kind), default=-1.0) for fl in flags])
        order = np.argsort(-score, kind="stable")
        flagged = int((score >= 0).sum())
        for share in (0.1, 0.2):
            top = set(order[: int(round(share * n))].tolist()) & set(np.flatnonzero(score >= 0).tolist())
            hit = sum(any(_found(kind, b, f, classes) for f in flags[i] if f.kind == kind) for i, b in truth
                      if i in top)
            corrupted_images = len({i for i, _ in truth} & top)
            row[f"{kind}: recall in top {share:.0%} of images"] = round(hit / len(truth), 4) if truth else None
            row[f"{kind}: top {share:.0%} images holding one"] = round(corrupted_images / max(1, len(top)), 4)
        row[f"{kind}: images flagged"] = flagged
    pf = product_flags(preds, gts, classes)
    row["product flags (5% deleted, 5% added)"] = {
        "cuts": pf["cuts"], "cap per kind": pf["cap"],
        **flag_figures(pf, n, {FALSE_DETECTION: deleted, MISSED_DETECTION: added}, classes)}
    grid = []  # other cuts and caps on the same cross-fitted predictions
    for pair in (args.cut_grid.split(",") if args.cut_grid else []):
        cuts = (float(pair.split(":")[0]), float(pair.split(":")[1]))
        for share in (0.05, 0.1):
            g = product_flags(preds, gts, classes, cuts, share)
            cell: dict[str, Any] = {"missed_below": cuts[0], "false_above": cuts[1], "cap share": share,
                                    **flag_figures(g, n, {FALSE_DETECTION: deleted, MISSED_DETECTION: added}, classes)}
            if args.clean:
                c = product_flags(*clean_sets, classes, cuts, share)
                for decision in ("cut", "capped"):
                    marked = set(c[FALSE_DETECTION][decision]) | set(c[MISSED_DETECTION][decision])
                    cell[f"no corruption: canvases flagged ({decision})"] = round(len(marked) / n, 4)
            grid.append(cell)
            print(json.dumps({"grid": cell}), flush=True)
    row["grid"] = grid
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="100,300")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--holdout", type=int, default=200)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--class-ids", default=",".join(map(str, DEFAULT_CLASSES)))
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--calibration", choices=["per_class", "pooled"], default="per_class")
    ap.add_argument("--recalls", default="0.95,0.99", help="'possible object' recall settings to compare")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hard-examples", type=int, default=0, metavar="N",
                    help="instead of budgets: N labelled canvases with boxes deleted/added, cross-fitted flags")
    ap.add_argument("--corrupt-share", type=float, default=0.05, help="share of boxes deleted, and added")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--cut", type=float, default=0.5, help="score at which a box counts as confident (the ranking)")
    ap.add_argument("--no-clean", dest="clean", action="store_false",
                    help="--hard-examples: skip the cross-fit on the uncorrupted labels")
    ap.add_argument("--cut-grid", default="", metavar="MISSED:FALSE,...",
                    help="--hard-examples: also score these (missed below, false above) cuts, caps 5%% and 10%%")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.class_ids = [int(c) for c in args.class_ids.split(",")]
    args.recalls = [float(r) for r in args.recalls.split(",")]
    classes = [FASHION_CLASSES[c] for c in args.class_ids]
    pool = load_fashion(FASHION_DIR, 20_000, seed=1234)
    if args.hard_examples:
        row = run_hard_examples(args, classes, pool)
        print(json.dumps(row), flush=True)
        if args.out:
            args.out.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "out"},
                                            "results": [row]}, indent=2, default=str))
        return 0
    holdout = make_canvases(args.holdout, args.seed + 1000, tuple(args.class_ids), pool=pool)
    test = make_canvases(args.test, args.seed + 2000, tuple(args.class_ids), pool=pool)
    rows = []
    for n in (int(b) for b in args.budgets.split(",")):
        row = run_budget(n, args, classes, pool, holdout, test)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "out"},
                                        "results": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fresh-hold-out coverage of each calibration mode on the final models of ``labelloop
simulate`` runs: what ``pooled``, ``auto`` and ``per_class`` would certify on random
hold-outs of the run's own size drawn from the pool that model left (prints a table).

    .venv/bin/python lab/benchmarks/holdout_modes.py sim/seed*/report.json --draws 200
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sqlmodel import Session, col, create_engine, select

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.fashion import FASHION_CLASSES, load_fashion  # noqa: E402
from lab.metrics import fresh_holdouts  # noqa: E402
from service.loop.infer import current_model  # noqa: E402
from service.models import Item, ItemStatus, Prediction  # noqa: E402

MODES = ("pooled", "auto", "per_class")


def load_pool(report: Path) -> dict | None:
    """The last model of a ``labelloop simulate`` run on the pool it left: ``pred``, ``truth``,
    ``scores``, ``proposed`` (each ``[N]``), ``holdout`` (its calibrating hold-out size),
    ``labels`` and ``seed``; ``None`` when the run's database is gone."""
    rep = json.loads(report.read_text())
    cfg, data_dir = rep["config"], Path(rep["active"]["data_dir"])
    db = data_dir / "sim.db"
    if not db.exists():
        return None
    _, y = load_fashion(Path(cfg["dataset"]), int(cfg["pool"]), int(cfg["seed"]))
    engine = create_engine(f"sqlite:///{db}")
    with Session(engine) as s:
        item = s.exec(select(Item)).first()
        assert item is not None
        mv = current_model(s, item.project_id)
        assert mv is not None
        rows = s.exec(select(Prediction, Item).join(Item, col(Item.id) == Prediction.item_id).where(
            Prediction.model_version_id == mv.id, col(Prediction.state).in_(["proposed", "none"]),
            col(Item.status).in_([ItemStatus.unlabelled, ItemStatus.skipped, ItemStatus.proposed]))).all()
        n_holdout = int((mv.metrics or {}).get("n_holdout") or 0)
        labels = sum(1 for _ in s.exec(select(Item.id).where(Item.status == ItemStatus.labelled)))
    engine.dispose()
    index = {c: i for i, c in enumerate(FASHION_CLASSES)}
    return {"pred": np.array([index[p.data["top"][0][0]] for p, _ in rows]),
            "truth": np.array([int(y[int(it.file_name[3:8])]) for _, it in rows]),
            "scores": np.array([p.score for p, _ in rows]),
            "proposed": np.array([p.state == "proposed" for p, _ in rows]),
            "holdout": n_holdout, "labels": labels, "seed": int(cfg["seed"])}


def run_modes(report: Path, draws: int) -> dict[str, float] | None:
    pool = load_pool(report)
    if pool is None:
        return None
    pred, truth, scores, proposed = pool["pred"], pool["truth"], pool["scores"], pool["proposed"]
    n_holdout, labels = pool["holdout"], pool["labels"]
    out: dict[str, float] = {"seed": pool["seed"], "labels": labels, "holdout": n_holdout}
    below = [c for c in range(len(FASHION_CLASSES)) if (proposed & (pred == c)).any()
             and (truth[proposed & (pred == c)] == c).mean() < 0.95]
    out["classes_proposed"] = len({int(c) for c in pred[proposed]})
    out["classes_below"] = len(below)
    for mode in MODES:
        f = fresh_holdouts(scores, pred == truth, n_holdout, draws=draws, mode=mode, pred=pred, truth=truth,
                           n_classes=len(FASHION_CLASSES))
        out[mode] = f["coverage"]
        out[f"{mode}_below"] = f["below_target"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--draws", type=int, default=200)
    args = ap.parse_args()
    rows = [r for r in (run_modes(p, args.draws) for p in args.reports) if r is not None]
    print("| seed | labels | hold-out | run's own proposals: classes below 0.95 of classes proposed | "
          + " | ".join(f"{m} coverage (draws below 0.95)" for m in MODES) + " |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in MODES) + " |")
    for r in rows:
        print(f"| {r['seed']} | {r['labels']} | {r['holdout']} | {r['classes_below']} of {r['classes_proposed']} | "
              + " | ".join(f"{r[m]:.3f} ({r[m + '_below']:.3f})" for m in MODES) + " |")
    pairs = f"{sum(r['classes_below'] for r in rows)} of {sum(r['classes_proposed'] for r in rows)}"
    print(f"| all | | | {pairs} | " + " | ".join(f"{np.mean([r[m] for r in rows]):.3f}" for m in MODES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

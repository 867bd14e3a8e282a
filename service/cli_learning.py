"""``labelloop simulate``: replay a labelled dataset through the loop."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from service.config import Settings

SWITCH = {"auto": None, "on": True, "off": False}  # a policy setting that may be left to its default


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("simulate", help="replay Fashion-MNIST (or IDX files) through the loop with an oracle")
    sp.add_argument("--pool", type=int, default=10_000)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--seeds", type=int, default=1, help="run seeds seed..seed+N-1")
    sp.add_argument("--budgets", default="1000,2000")
    sp.add_argument("--retrain-every", type=int, default=200)
    sp.add_argument("--algorithm", choices=["fast", "precise"], default="fast")
    sp.add_argument("--strategy", default="margin")
    sp.add_argument("--calibration", choices=["pooled", "per_class"], default="pooled")
    sp.add_argument("--holdout-share", type=float, default=0.2)
    sp.add_argument("--holdout-min", type=int, default=300,
                    help="the policy's holdout_min: the first this many hold-out labels are drawn sooner "
                         "(1.5x the share, then a pause until the share catches up; 0: plain share)")
    sp.add_argument("--target", type=float, default=0.95)
    sp.add_argument("--delta", type=float, default=0.05)
    sp.add_argument("--image-size", type=int, default=64)
    sp.add_argument("--epochs", type=int, default=12)
    sp.add_argument("--semi-supervised", choices=["auto", "on", "off"], default="auto",
                    help="the policy's semi_supervised: auto (on for fast, off for precise), on or off")
    sp.add_argument("--features", choices=["stages", "final"], default="stages",
                    help="the policy's features: the backbone's top features and three stages below, or the top only")
    sp.add_argument("--mirror", choices=["on", "off"], default="on",
                    help="the policy's mirror: average each image's features with its mirror image's")
    sp.add_argument("--no-baseline", action="store_true")
    sp.add_argument("--dataset", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    sp.add_argument("--out", type=Path, default=Path("simulation"))
    sp.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from service.simulate import SimConfig, simulate

    if not (args.dataset / "train-images-idx3-ubyte.gz").exists():
        raise SystemExit(f"error: no Fashion-MNIST IDX files in {args.dataset} "
                         "(Debian: apt-get install dataset-fashion-mnist)")
    summary = []
    for seed in range(args.seed, args.seed + args.seeds):
        cfg = SimConfig(pool=args.pool, seed=seed, budgets=[int(b) for b in args.budgets.split(",")],
                        retrain_every=args.retrain_every, algorithm=args.algorithm, strategy=args.strategy,
                        holdout_share=args.holdout_share, holdout_min=args.holdout_min, target=args.target,
                        delta=args.delta,
                        calibration=args.calibration, image_size=args.image_size, epochs=args.epochs,
                        semi_supervised=SWITCH[args.semi_supervised], features=args.features,
                        mirror=args.mirror == "on", dataset=args.dataset, torch_threads=settings.torch_threads)
        out = args.out / f"seed{seed}"
        rep = simulate(cfg, out, baseline=not args.no_baseline, work=args.out / "work")
        row = {"seed": seed, "at_budgets": rep["at_budgets"], "label_efficiency": rep.get("label_efficiency"),
               "seconds": rep["active"]["seconds"], "timing": rep["active"]["timing"]}
        summary.append(row)
        print(json.dumps(row, default=str))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"wrote {args.out / 'summary.json'}")
    return 0

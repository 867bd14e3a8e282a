"""``labelloop simulate``: replay a labelled dataset through the loop."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from learning.policy import CALIBRATIONS, Policy
from service.config import Settings

SWITCH = {"auto": None, "on": True, "off": False}  # a policy setting that may be left to its default
DEFAULT = Policy()


def add_policy_arguments(sp: argparse.ArgumentParser) -> None:
    """The policy knobs a simulation takes, each defaulting to the product's default policy."""
    sp.add_argument("--retrain-every", type=int, default=DEFAULT.retrain_every_labels,
                    help="the policy's retrain_every_labels")
    sp.add_argument("--algorithm", choices=["fast", "precise"], default=DEFAULT.algorithm)
    sp.add_argument("--strategy", default=DEFAULT.strategy)
    sp.add_argument("--calibration", choices=list(CALIBRATIONS), default=DEFAULT.calibration)
    sp.add_argument("--holdout-share", type=float, default=DEFAULT.holdout_share)
    sp.add_argument("--holdout-min", type=int, default=DEFAULT.holdout_min,
                    help="the policy's holdout_min: the first this many hold-out labels are drawn sooner "
                         "(1.5x the share, then a pause until the share catches up; 0: plain share)")
    sp.add_argument("--target", type=float, default=DEFAULT.target_precision)
    sp.add_argument("--delta", type=float, default=DEFAULT.delta)
    sp.add_argument("--image-size", type=int, default=DEFAULT.image_size,
                    help="the policy's image_size (default: the image_size setting, as in the product)")
    sp.add_argument("--epochs", type=int, default=DEFAULT.epochs)
    sp.add_argument("--semi-supervised", choices=["auto", "on", "off"], default="auto",
                    help="the policy's semi_supervised: auto (on for fast, off for precise), on or off")
    sp.add_argument("--features", choices=["stages", "final"], default=DEFAULT.features,
                    help="the policy's features: the backbone's top features and three stages below, or the top only")
    sp.add_argument("--mirror", choices=["on", "off"], default="on" if DEFAULT.mirror else "off",
                    help="the policy's mirror: average each image's features with its mirror image's")
    sp.add_argument("--policy", action="append", default=[], metavar="KEY=VALUE", type=policy_item,
                    help="any other policy knob (VALUE as JSON, e.g. grid_purity=0.9); repeatable")


def policy_item(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or key not in {f.name for f in fields(Policy)}:
        raise argparse.ArgumentTypeError(f"{text!r}: want KEY=VALUE with KEY one of the policy's knobs")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("simulate", help="replay Fashion-MNIST (or IDX files) through the loop with an oracle")
    sp.add_argument("--pool", type=int, default=10_000)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--seeds", type=int, default=1, help="run seeds seed..seed+N-1")
    sp.add_argument("--budgets", default="1000,2000")
    add_policy_arguments(sp)
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
                        mirror=args.mirror == "on", dataset=args.dataset, torch_threads=settings.torch_threads,
                        extra_policy=dict(args.policy))
        out = args.out / f"seed{seed}"
        rep = simulate(cfg, out, baseline=not args.no_baseline, work=args.out / "work")
        row = {"seed": seed, "at_budgets": rep["at_budgets"], "label_efficiency": rep.get("label_efficiency"),
               "seconds": rep["active"]["seconds"], "timing": rep["active"]["timing"]}
        summary.append(row)
        print(json.dumps(row, default=str))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"wrote {args.out / 'summary.json'}")
    return 0

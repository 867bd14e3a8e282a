"""``labelloop simulate-review``: the simulator experiments of :mod:`service.sim_review`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from learning.policy import CALIBRATIONS, Policy
from service.cli_learning import policy_item
from service.config import Settings

KINDS = ("actions", "strategies", "label-errors", "audit")


def _purity(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("experiment", choices=KINDS)
    sp.add_argument("--pool", type=int, default=10_000)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--seeds", type=int, default=1, help="run seeds seed..seed+N-1")
    sp.add_argument("--pool-seed", type=int, default=None,
                    help="draw the pool with this seed for every run (default: each run's seed; not strategies)")
    sp.add_argument("--algorithm", choices=["fast", "precise"], default=Policy.algorithm)
    sp.add_argument("--strategy", default=Policy.strategy, help="the queue's strategy (actions, label-errors, audit)")
    sp.add_argument("--strategies", default="random,margin,entropy,margin_diverse", help="strategies experiment")
    sp.add_argument("--retrain-every", type=int, default=None,
                    help="labels between trainings (default: the policy's retrain_every_labels)")
    sp.add_argument("--budget", type=int, default=None,
                    help="human labels (label-errors, audit: 2000; strategies: 3000)")
    sp.add_argument("--warmup", type=int, default=300, help="actions: single labels before grids and Pending")
    sp.add_argument("--page-size", type=int, default=9, choices=[4, 6, 9])
    sp.add_argument("--min-share", type=float, default=0.5, help="actions: skip a grid page below this majority")
    sp.add_argument("--no-relabel", action="store_true", help="actions: never change a grid page's class")
    sp.add_argument("--deselect-only", action="store_true",
                    help="actions: leave a grid page's exceptions for the queue instead of giving each its class "
                         "on the page")
    sp.add_argument("--grid-min-confidence", type=float, default=None,
                    help="the project's grid_min_confidence policy (default: the policy's default)")
    sp.add_argument("--epochs", type=int, default=None, help="`precise` epochs per training (default: the policy's)")
    sp.add_argument("--grid-purity", type=_purity, default=False, metavar="P|none",
                    help="the project's grid_purity policy (default: the policy's default)")
    sp.add_argument("--redraws", type=int, default=0,
                    help="audit: also repeat the last training and its audit draw on N copies of each database")
    sp.add_argument("--noise", type=float, default=0.05)
    sp.add_argument("--target", type=float, default=0.95)
    sp.add_argument("--delta", type=float, default=0.05)
    sp.add_argument("--holdout-share", type=float, default=Policy.holdout_share)
    sp.add_argument("--calibration", choices=list(CALIBRATIONS), default=Policy.calibration,
                    help="the policy's calibration (default: the product's)")
    sp.add_argument("--policy", action="append", default=[], metavar="KEY=VALUE", type=policy_item,
                    help="any other policy knob (VALUE as JSON); repeatable")
    sp.add_argument("--image-size", type=int, default=Policy.image_size,
                    help="the policy's image_size (default: the image_size setting, as in the product)")
    sp.add_argument("--features", choices=["stages", "final"], default=None,
                    help="the project's features policy (default: the policy's default)")
    sp.add_argument("--dataset", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    sp.add_argument("--out", type=Path, default=Path("bench-out/issue4"))


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("simulate-review", help="measure human actions, strategies, label-error flags and audits "
                        f"on Fashion-MNIST with an oracle ({', '.join(KINDS)})")
    add_arguments(sp)
    sp.set_defaults(func=cmd_simulate_review)


def cmd_simulate_review(args: argparse.Namespace, settings: Settings) -> int:
    from service.sim_review import from_args

    if not (args.dataset / "train-images-idx3-ubyte.gz").exists():
        raise SystemExit(f"error: no Fashion-MNIST IDX files in {args.dataset} "
                         "(Debian: apt-get install dataset-fashion-mnist)")
    import sys

    report = from_args(args, torch_threads=settings.torch_threads,
                       command=" ".join(["labelloop", *sys.argv[1:]]))
    print(json.dumps(report["summary"], indent=1, default=str))
    print(f"wrote {args.out / (args.experiment + '.json')}")
    return 0

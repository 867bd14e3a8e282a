"""``labelloop simulate`` and ``labelloop simulate-review``: the lab's commands.

:func:`register` adds them to the ``labelloop`` parser (``service.cli`` calls it when the
``lab`` package is importable). Light on purpose: the simulators (torch, the jobs) are
imported only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from learning.policy import CALIBRATIONS, Policy
from service.config import Settings

SWITCH = {"auto": None, "on": True, "off": False}  # a policy setting that may be left to its default
DEFAULT = Policy()
KINDS = ("actions", "strategies", "label-errors", "audit", "order")
FASHION_HINT = "(Debian: apt-get install dataset-fashion-mnist)"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``simulate`` and ``simulate-review`` to ``labelloop``'s subcommands."""
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

    sr = sub.add_parser("simulate-review", help="measure human actions, strategies, label-error flags and audits "
                        f"on Fashion-MNIST with an oracle ({', '.join(KINDS)})")
    add_review_arguments(sr)
    sr.set_defaults(func=cmd_simulate_review)


# -- labelloop simulate ------------------------------------------------------------------------


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
    """``KEY=VALUE`` with KEY one of the policy's knobs -> ``(KEY, VALUE as JSON, or as text)``."""
    key, sep, value = text.partition("=")
    if not sep or key not in {f.name for f in fields(Policy)}:
        raise argparse.ArgumentTypeError(f"{text!r}: want KEY=VALUE with KEY one of the policy's knobs")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _need_fashion(dataset: Path) -> None:
    if not (dataset / "train-images-idx3-ubyte.gz").exists():
        raise SystemExit(f"error: no Fashion-MNIST IDX files in {dataset} {FASHION_HINT}")


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from lab.plot import require_matplotlib
    from lab.simulate import SimConfig, simulate

    _need_fashion(args.dataset)
    require_matplotlib()  # before hours of simulation, not after them
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


# -- labelloop simulate-review -----------------------------------------------------------------


def _purity(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def add_review_arguments(sp: argparse.ArgumentParser) -> None:
    """The arguments of ``simulate-review`` (read by :func:`lab.sim_review.from_args`)."""
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
    sp.add_argument("--confirm", type=int, default=50,
                    help="order: right proposals each arm confirms (with one correction and one rejection)")
    sp.add_argument("--dataset", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    sp.add_argument("--out", type=Path, default=Path("bench-out/issue4"))


def cmd_simulate_review(args: argparse.Namespace, settings: Settings) -> int:
    from lab.sim_review import from_args

    _need_fashion(args.dataset)
    command = " ".join(["labelloop", *sys.argv[1:]])
    if args.experiment == "order":  # order of confirmation (issue 23): lab.review_order
        from lab.review_order import from_args as order_from_args
        from lab.review_order import table

        report = order_from_args(args, torch_threads=settings.torch_threads, command=command)
        print("\n\n".join(table(r) for r in report["runs"]))
        print(f"wrote {args.out / 'order.json'}")
        return 0
    report = from_args(args, torch_threads=settings.torch_threads, command=command)
    print(json.dumps(report["summary"], indent=1, default=str))
    print(f"wrote {args.out / (args.experiment + '.json')}")
    return 0

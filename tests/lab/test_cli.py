"""The lab's commands: registered in ``labelloop`` from one place, absent when the lab is."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from lab import cli as lab_cli
from service.cli import build_parser

LAB_COMMANDS = {"simulate", "simulate-review"}


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_labelloop_has_the_lab_commands_and_its_own() -> None:
    names = _commands(build_parser())
    assert LAB_COMMANDS <= names
    assert {"serve", "demo", "worker", "users", "import", "export", "annotate", "backup"} <= names


def test_without_the_lab_its_commands_are_absent_and_the_rest_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lab", None)  # ``from lab import cli`` now fails as if not installed
    parser = build_parser()
    assert not LAB_COMMANDS & _commands(parser)
    assert parser.parse_args(["export", "p", "--format", "coco", "--out", "x"]).cmd == "export"


def test_simulate_arguments_default_to_the_products_policy() -> None:
    args = build_parser().parse_args(["simulate", "--policy", "grid_purity=0.9", "--policy", "strategy=margin"])
    assert args.func is lab_cli.cmd_simulate
    assert args.retrain_every == lab_cli.DEFAULT.retrain_every_labels
    assert args.calibration == lab_cli.DEFAULT.calibration
    assert dict(args.policy) == {"grid_purity": 0.9, "strategy": "margin"}


def test_simulate_review_arguments() -> None:
    args = build_parser().parse_args(["simulate-review", "actions", "--grid-purity", "none", "--seeds", "2"])
    assert args.func is lab_cli.cmd_simulate_review
    assert args.experiment == "actions" and args.grid_purity is None and args.seeds == 2
    assert build_parser().parse_args(["simulate-review", "audit"]).grid_purity is False  # the policy's default


def test_a_policy_item_must_name_a_knob() -> None:
    assert lab_cli.policy_item("epochs=3") == ("epochs", 3)
    assert lab_cli.policy_item("strategy=margin") == ("strategy", "margin")
    for bad in ("no_such_knob=1", "epochs"):
        with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
            lab_cli.policy_item(bad)


def test_simulate_without_the_dataset_says_how_to_get_it(tmp_path: Path) -> None:
    from service.cli import main

    with pytest.raises(SystemExit, match="dataset-fashion-mnist"):
        main(["simulate", "--dataset", str(tmp_path), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_plots_need_matplotlib_and_say_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    from lab import plot

    plot.require_matplotlib()  # the dev extra installs it
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(SystemExit, match=r"labelloop\[lab\]"):
        plot.require_matplotlib()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"labelloop\[lab\]"):
        plot.plot({"active": {"curve": [], "strategy": "margin"}, "config": {"target": 0.95}}, tmp_path)

"""Plots of a simulation report (matplotlib: the ``lab`` extra, imported only here, when called)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MISSING = "plotting a simulation needs matplotlib, the lab's extra: pip install 'labelloop[lab]'"


def require_matplotlib() -> None:
    """Raise SystemExit with how to install it when matplotlib is missing (check before a long run)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise SystemExit(f"error: {MISSING}")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(MISSING) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(report: dict[str, Any], out: Path) -> None:
    """``coverage.png``, ``precision.png`` and ``pool_accuracy.png`` in ``out``: the active run
    (and the random baseline, if any) against human labels."""
    plt = _pyplot()
    runs = [("active", report["active"])] + ([("random", report["random"])] if "random" in report else [])
    for key, ylabel in (("coverage", "coverage of the unlabelled pool"),
                        ("precision", "realised pre-label precision"),
                        ("pool_accuracy", "accuracy on the unlabelled pool")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, r in runs:
            pts = [(p["labels"], p[key]) for p in r["curve"] if p[key] is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=f"{name} ({r['strategy']})")
        if key == "precision":
            ax.axhline(report["config"]["target"], color="grey", linestyle="--", label="target")
        ax.set_xlabel("human labels")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{key}.png", dpi=100)
        plt.close(fig)

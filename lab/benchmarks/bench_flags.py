"""Label-error flags, old rule against new, on synthetic embeddings (not collected by pytest).

Ten Gaussian classes in a 64-d embedding space, with the overlap of a real 10-class
image problem: three pairs of classes sit closer than the rest (shirt / T-shirt) and
one item in ten lies part of the way toward another class (a blurry or cropped
image); ``--spread`` sets the distance between class means, and the default gives a
cross-fitted accuracy of about 0.85-0.9 at 1,000 labels. For each number of labels
``N`` and seed:

* clean labels: the share of labels each rule flags (every flag is false);
* ``--corrupt`` (5%) of labels changed at random to another class: precision and
  recall of the flags against the changed labels; for the new rule also the flags it
  calls ``likely right`` (those that take their item out of training).

Both rules see the service's own cross-fitting (5-fold logistic regression on
L2-normalised embeddings). ``old``: :func:`learning.hard_examples.find_label_issues` on
one :func:`service.loop.review.out_of_sample_probs` (what the ``hard_examples`` job
flagged before). ``new``: :func:`learning.hard_examples.flag_label_errors`, default
:class:`FlagRule` (5% cap included), on :func:`service.loop.review.label_evidence`
(``--fits`` cross-fittings without the labels the old rule doubts), as the job now
does. ``new, 2% cap``: the same with the cap at 2% of the labels. No reviewer history.

    OMP_NUM_THREADS=1 .venv/bin/python lab/benchmarks/bench_flags.py
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from learning.hard_examples import FlagRule, find_label_issues, flag_label_errors  # noqa: E402
from service.loop.review import label_evidence, out_of_sample_probs  # noqa: E402

C, D = 10, 64


def world(spread: float, seed: int = 1234) -> np.ndarray:
    """``[C, D]`` class means: random directions, classes (0, 1), (2, 3), (4, 5) closer."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(C, D)) * spread / np.sqrt(2 * D)
    for k in range(3):
        means[2 * k + 1] = means[2 * k] + 0.55 * (means[2 * k + 1] - means[2 * k])
    return means


def sample(means: np.ndarray, n: int, seed: int, *, ambiguous: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """``(x [n, D], truth [n])``: unit Gaussian noise around the class means, an
    ``ambiguous`` share of items moved 20-50% of the way toward another class, then
    L2-normalised like the service's cached embeddings."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(C, size=n)
    centre = means[truth].copy()
    odd = np.flatnonzero(rng.random(n) < ambiguous)
    partner = np.where(truth[odd] < 6, truth[odd] ^ 1, (truth[odd] + rng.integers(1, C, odd.size)) % C)
    partner = np.where(partner == truth[odd], (partner + 1) % C, partner)
    a = rng.uniform(0.2, 0.5, odd.size)[:, None]
    centre[odd] = (1 - a) * centre[odd] + a * means[partner]
    x = centre + rng.normal(size=(n, D))
    return x / np.linalg.norm(x, axis=1, keepdims=True), truth  # unit length, as the service's embeddings


def corrupt(truth: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels [n], changed [n] bool)``: ``share`` of labels moved to a random other class."""
    rng = np.random.default_rng(seed)
    labels = truth.copy()
    changed = np.zeros(truth.size, dtype=bool)
    idx = rng.choice(truth.size, size=int(round(share * truth.size)), replace=False)
    labels[idx] = (truth[idx] + rng.integers(1, C, idx.size)) % C
    changed[idx] = True
    return labels, changed


def score(flagged: np.ndarray, changed: np.ndarray) -> tuple[float, float]:
    hit = int(changed[flagged].sum())
    return (hit / flagged.size if flagged.size else float("nan"), hit / max(1, int(changed.sum())))


def run(n: int, seed: int, share: float, means: np.ndarray, fits: int, rule: FlagRule) -> dict[str, float]:
    x, truth = sample(means, n, seed)
    labels, changed = corrupt(truth, share, seed + 1) if share else (truth, np.zeros(n, dtype=bool))
    one = out_of_sample_probs(x, labels, C, seed=seed)  # what the job computed before
    old = np.array([f.index for f in find_label_issues(labels, one)], dtype=np.int64)
    evidence = label_evidence(x, labels, C, seed=seed, repeats=fits)
    flags = flag_label_errors(labels, evidence, rule=rule)
    new = np.array([f.index for f in flags], dtype=np.int64)
    two = np.array([f.index for f in flag_label_errors(labels, evidence, rule=replace(rule, max_share=0.02))],
                   dtype=np.int64)
    likely = np.array([f.index for f in flags if f.detail["likely_right"]], dtype=np.int64)
    out = {"acc": float((one.argmax(1) == truth).mean()), "old_n": old.size, "new_n": new.size, "likely_n": likely.size}
    for name, idx in (("old", old), ("new", new), ("cap2", two), ("likely", likely)):
        out[f"{name}_p"], out[f"{name}_r"] = score(idx, changed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="300,1000,2000")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--corrupt", type=float, default=0.05)
    ap.add_argument("--spread", type=float, default=6.0, help="distance scale between class means")
    ap.add_argument("--fits", type=int, default=3, help="cross-fittings (fold seeds) for the new rule")
    args = ap.parse_args()
    rule = FlagRule()
    means = world(args.spread)
    t0 = time.perf_counter()
    print(f"10 classes, 64-d, spread {args.spread}; new rule {rule}, {args.fits} fits")
    print("acc: cross-fitted accuracy on clean labels. clean: share of labels flagged (all false). "
          f"{args.corrupt:.0%} corrupt: precision/recall of the flags")
    print(f"{'N':>5} {'seed':>4} {'acc':>5} | clean: old    new  (likely right) | corrupt: old     new        "
          f"new, 2% cap  likely right (n)")
    for n in (int(v) for v in args.sizes.split(",")):
        rows = []
        for seed in (int(v) for v in args.seeds.split(",")):
            clean = run(n, 100 + seed, 0.0, means, args.fits, rule)
            noisy = run(n, 200 + seed, args.corrupt, means, args.fits, rule)
            rows.append((clean, noisy))
            print(_line(n, str(seed), clean, noisy))
        avg = [{k: _mean([r[i][k] for r in rows]) for k in rows[0][i]} for i in (0, 1)]
        print(_line(n, "mean", *avg))
    print(f"{time.perf_counter() - t0:.0f} s")


def _line(n: int, seed: str, clean: dict[str, float], noisy: dict[str, float]) -> str:
    return (f"{n:>5} {seed:>4} {clean['acc']:>5.3f} | {clean['old_n'] / n:>10.1%} {clean['new_n'] / n:>6.1%} "
            f"({clean['likely_n'] / n:>5.1%})     | {_pr(noisy, 'old'):>17}  {_pr(noisy, 'new')}  {_pr(noisy, 'cap2')}"
            f"    {_pr(noisy, 'likely')} ({noisy['likely_n']:.0f})")


def _mean(values: list[float]) -> float:
    real = [v for v in values if not np.isnan(v)]
    return float(np.mean(real)) if real else float("nan")


def _pr(row: dict[str, float], name: str) -> str:
    return f"{row[f'{name}_p']:.2f}/{row[f'{name}_r']:.2f}"


if __name__ == "__main__":
    main()

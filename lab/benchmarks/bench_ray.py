"""Inference throughput: the in-process executor vs Ray on this machine with 1 and 2 actors, in one run.

    python -m lab.benchmarks.bench_ray                    # 2,048 generated images, shards of 256
    python -m lab.benchmarks.bench_ray --n 4096 --shard-size 512 --actors 1 2 4
    python -m lab.benchmarks.bench_ray --n 20000 --nodes       # in-process, Ray on 1 node, on 2 nodes

Generates ``--n`` seeded 256x256 JPEGs and one classifier (``tf_efficientnet_lite0``, the
bundled weights, a random head: inference costs the same), then times the classification
pipeline's inference compute step (:meth:`ClassificationPipeline.compute_infer`: embed
through the cache, predict, score, decide) on the whole set:

* ``in-process``: ``LABELLOOP_EXECUTOR=inprocess``, shards one after another in this process,
  ``--threads`` torch threads (default: every core);
* ``ray N``: :class:`service.jobs.ray_executor.RayExecutor` on a private local Ray with
  ``N`` actors of one CPU and ``--actor-threads`` threads each (default 1). *cold*: the pool
  is started inside the timing (actors import torch and load the model); *warm*: the pool
  is already up with the model loaded, as for every job after the first in a running
  service. Each run embeds into its own empty cache, so nothing is computed only once.

With ``--nodes``, Ray is a real cluster of this machine's making (:mod:`lab.ray_cluster`): a
head node of one CPU (one actor), then a second node of one CPU joins (two actors), each
timed cold and warm as above.

Prints one table, images/s side by side and the ratios to in-process. Figures depend on how
busy the machine is: run it on an idle one, and say which machine gave which number.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from learning.policy import Policy
from service.config import Settings
from service.jobs.executor import LocalContext, map_in_process
from service.models import Task
from service.pipelines.base import ModelConfig
from service.pipelines.classification import ClassificationPipeline, InferInputs, classifier

CLASSES = ["a", "b", "c"]


def make_images(folder: Path, n: int, seed: int = 0, side: int = 256) -> list[Path]:
    """``n`` seeded ``side`` x ``side`` JPEGs: colour gradients with grain."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    paths = []
    for i in range(n):
        a, b, c = rng.uniform(0, 255, size=(3, 3))
        img = a * xx[..., None] / 3 + b * yy[..., None] / 3 + c / 3 + rng.normal(0, 12, size=(side, side, 3))
        p = folder / f"{i:06d}.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def inputs_for(model_path: Path, paths: list[Path], model: ModelConfig) -> InferInputs:
    shas = [hashlib.sha256(p.name.encode()).hexdigest() for p in paths]  # the cache keys on them: distinct
    return InferInputs(model_path=str(model_path), algorithm="fast", classes=CLASSES, task=Task.multiclass,
                       thresholds=[0.9] * len(CLASSES), shas=shas, paths=paths, n_pool=len(paths),
                       strategy="margin", explore=False, query_seed=0, model=model)


def timed(pipe: ClassificationPipeline, inputs: InferInputs, ctx: LocalContext) -> float:
    start = time.perf_counter()
    out = pipe.compute_infer(inputs, ctx)
    seconds = time.perf_counter() - start
    assert len(out.scores) == len(inputs.paths)
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="in-process torch threads")
    ap.add_argument("--actor-threads", type=int, default=1, help="torch threads per Ray actor")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--nodes", action="store_true",
                    help="Ray as a cluster of nodes of one CPU each (1, then 2) instead of a private Ray of actors")
    args = ap.parse_args(argv)

    import ray

    from service.jobs.ray_executor import RayExecutor, release_pool

    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    paths = make_images(root / "images", args.n)
    base = ModelConfig(backbone="tf_efficientnet_lite0", checkpoint=None, image_size=args.image_size,
                       torch_threads=args.threads, data_dir=root / "warmup", device="cpu", cpu_runtime="auto",
                       runtime_dir=root / "runtime", decode_workers=2, batch_size=64)
    model_path = root / "model"
    classifier(base, CLASSES, Task.multiclass, Policy()).save(model_path)
    pipe = ClassificationPipeline("multiclass", scans_hard_examples=True)
    timed(pipe, inputs_for(model_path, paths[:64], base), LocalContext())  # exports the CPU runtime once

    rows: list[tuple[str, float, str]] = []
    model = ModelConfig(**{**base.__dict__, "data_dir": root / "inprocess"})
    s = timed(pipe, inputs_for(model_path, paths, model), LocalContext(mapper=map_in_process,
                                                                      shard_size=args.shard_size))
    rows.append(("in-process", s, f"{args.threads} threads"))

    cluster = None
    if args.nodes:
        from lab.ray_cluster import LocalCluster

        args.actors = [1, 2]
        path = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", ""))
                               if p)
        cluster = LocalCluster(root, {"PYTHONPATH": path})
        cluster.start_head(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    else:
        ray.init(num_cpus=max(args.actors), include_dashboard=False, log_to_driver=False)
    settings = Settings(data_dir=root, device="cpu")
    actor_model = ModelConfig(**{**base.__dict__, "torch_threads": args.actor_threads})
    try:
        for k in args.actors:
            if cluster is not None and k > 1:
                cluster.add_node(num_cpus=1)
            ex = RayExecutor(None, settings, actors=k)  # type: ignore[arg-type]
            ctx = LocalContext(mapper=ex.map, shard_size=args.shard_size)
            where = f"{k} node{'s' if k > 1 else ''}, 1 actor each" if cluster else f"{k} actor{'s' if k > 1 else ''}"
            for phase in ("cold", "warm"):
                m = ModelConfig(**{**actor_model.__dict__, "data_dir": root / f"ray{k}-{phase}"})
                s = timed(pipe, inputs_for(model_path, paths, m), ctx)
                rows.append((f"ray {where} ({phase})", s, f"{args.actor_threads} thread(s) each"))
            release_pool()
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.stop()

    ref = args.n / rows[0][1]
    print(f"\n{args.n} images ({paths[0].stat().st_size // 1024} KiB JPEGs, 256x256) at {args.image_size} px, "
          f"shards of {args.shard_size}, {os.cpu_count()} cores")
    print(f"{'executor':<36} {'seconds':>8} {'images/s':>9} {'vs in-process':>14}  setup")
    for name, seconds, setup in rows:
        ips = args.n / seconds
        print(f"{name:<36} {seconds:8.2f} {ips:9.1f} {ips / ref:13.2f}x  {setup}")
    warm = [seconds for name, seconds, _ in rows if name.endswith("(warm)")]
    if len(warm) >= 2:
        print(f"warm: {args.actors[-1]} vs {args.actors[0]} {'nodes' if args.nodes else 'actors'}: "
              f"{warm[0] / warm[-1]:.2f}x; {args.actors[0]} vs in-process: {rows[0][1] / warm[0]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

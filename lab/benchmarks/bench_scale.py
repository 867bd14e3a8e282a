"""Scale benchmark for the embeddings package (not collected by pytest).

Part 1, vectors (``--skip-index`` skips it): ``--n`` seeded random float32 vectors of
``--dim`` (default 1,000,000 x 1,280, Lite0's feature width), L2-normalised like real
embeddings (``--data clustered`` draws them around ``--blobs`` centres instead: uniform
random vectors have no neighbourhood structure, the worst case for IVF recall), through the
project's own code paths:

* build: ``VectorIndex(dim, version).build(ids, vecs)`` with its default kind selection
  (``kind="auto"``: IVF at or above ``ivf_threshold``, 50,000), timed with a breakdown
  (normalise / ``make_index`` = quantizer training / ``add_with_ids``) taken by wrapping
  those calls, not by changing them;
* search: ``VectorIndex.search`` of ``--queries`` queries (k=10), two query sets: fresh
  vectors from the same distribution, not stored, and stored vectors ("more like this
  item"; the item itself counts as one of its 10 neighbours); recall@10 against an
  exact brute-force top-10 over *all* N vectors (blockwise numpy matmul, not timed as a
  project phase); for IVF also a small ``nprobe`` sweep via the ``VectorIndex.nprobe`` setter;
* save + load: ``VectorIndex.save`` / ``VectorIndex.load`` (sha256-checked) in a temp dir;
* k-means: ``embeddings.cluster.kmeans(vecs, k, seed=0)`` (k-means++ on a sample, FAISS
  Lloyd iterations, then assignment of every point to its centroid, all inside
  ``kmeans``; the breakdown wraps ``_kmeans_pp``, ``faiss.Kmeans.train`` and
  ``IndexFlatIP.search``). ``k`` defaults to what the service's cluster job uses
  (``max(choose_k(n, 4), ...)``; at these sizes the ``max_k=1000`` cap);
* grid pages: ``grid_pages`` for page sizes 4, 6 and 9 as the cluster job does, with the
  k-means result of the previous phase reused (so this times only the page cutting).

Part 2, embedding throughput (``--skip-embed`` skips it), images/s of the extractor
against plain timm eager inference, same process, same thread count, same batch size,
``--images`` synthetic 256x256 RGB JPEGs, input size from timm's data config (224 for
Lite0) unless ``--image-size``; every path is warmed up first and the passes are
interleaved (``--repeats`` rounds) so that load from other work on the machine hits all
of them alike:

* ``extract(paths)``: ``embeddings.extract.extract(adapter.embed, paths)`` - JPEG decode +
  preprocess + model + normalise (the full extractor);
* ``adapter.embed(paths)``: what the service's ``cached_embeddings`` calls (decode inside);
* ``adapter.embed(PIL)``: already decoded images - preprocess + model;
* ``timm + timm transform (PIL)``: ``timm.create_model`` + ``create_transform`` eager;
* ``timm model (tensors)`` / ``adapter.features (tensors)``: the network alone on the same
  preprocessed tensors (plain timm eager vs the adapter's forward).

Memory: each phase starts after ``gc.collect()`` and glibc ``malloc_trim(0)`` (so from live
memory). The script resets the kernel's peak-RSS mark (``echo 5 > /proc/self/clear_refs``)
at the start and reads ``VmHWM`` from ``/proc/self/status`` at the end, so "phase peak RSS"
is the true peak resident set of the process during that phase; a child process samples
``RssAnon`` every 0.05 s ("anon peak": heap/numpy/FAISS memory, without file-backed pages);
RssAnon before/after and ``ru_maxrss`` (process peak so far) are printed too.
By default (``--vectors memmap``) the benchmark's own copy of the vectors lives in a
file-backed memmap under ``--tmpdir``: reclaimable page cache, so on a machine shared with
other work the run is not OOM-killed for the caller's copy, and "anon" is what the project
code itself allocates; ``--vectors memory`` holds them in ordinary memory as the service
does (add ~N*D*4 bytes to every anon figure). The vector part runs first, before torch
models are loaded.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python lab/benchmarks/bench_scale.py \
        --out bench-out/scale.json          # writes scale.json and scale.md
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python lab/benchmarks/bench_scale.py --n 20000  # quick check
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import embeddings.cluster as cluster_mod  # noqa: E402
import lab.faiss_index.index as index_mod  # noqa: E402
from embeddings.cluster import choose_k, grid_pages, kmeans  # noqa: E402
from embeddings.extract import extract, load_image  # noqa: E402
from lab.faiss_index.index import VectorIndex  # noqa: E402

GB = 1024**3


# ---------------------------------------------------------------- measurement helpers
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def malloc_trim() -> bool:
    """Give free heap memory back to the OS (glibc ``malloc_trim(0)``, all arenas), so that a
    phase starts from its live memory rather than from what earlier phases left cached."""
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def maxrss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def gib(kb: int | None) -> float | None:
    return None if kb is None else round(kb * 1024 / GB, 2)


_SAMPLER = """
import select, sys
pid, interval = sys.argv[1], float(sys.argv[2])
def anon():
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
peak = anon()
while True:
    ready, _, _ = select.select([sys.stdin], [], [], interval)
    peak = max(peak, anon())
    if ready:
        if not sys.stdin.readline():
            break
        print(peak, flush=True)
        peak = anon()
"""


class AnonSampler:
    """Peak ``RssAnon`` (anonymous memory: heap, numpy, FAISS; not file-backed pages such as
    a memmap) of this process, sampled every ``interval`` s by a small child process (so
    GIL-holding native calls cannot starve it). :meth:`take` returns the peak since the
    previous call and starts a new window."""

    def __init__(self, interval: float = 0.05) -> None:
        self._proc: subprocess.Popen[str] | None = None
        with contextlib.suppress(OSError):
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _SAMPLER, str(os.getpid()), str(interval)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )

    def take(self) -> int | None:
        if self._proc is None or self._proc.stdin is None or self._proc.stdout is None:
            return None
        self._proc.stdin.write("\n")
        self._proc.stdin.flush()
        return int(self._proc.stdout.readline())

    def close(self) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.close()
            self._proc.wait(timeout=10)


class Phases:
    """Wall time and memory per phase; see the module docstring for the memory measures."""

    def __init__(self, on_phase: Callable[[], None] | None = None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.on_phase = on_phase
        self.sampler = AnonSampler()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        gc.collect()
        malloc_trim()
        notes: dict[str, Any] = {}
        can_reset = reset_peak()
        rss0 = proc_status_kb("VmRSS")
        anon0 = proc_status_kb("RssAnon")
        self.sampler.take()  # start a new sampling window
        log(f"phase {name} ...")
        t0 = time.perf_counter()
        try:
            yield notes
        finally:
            wall = time.perf_counter() - t0
            anon_peak = self.sampler.take()
        row = {
            "phase": name,
            "wall_s": round(wall, 2),
            "rss_before_gib": gib(rss0),
            "rss_after_gib": gib(proc_status_kb("VmRSS")),
            "phase_peak_gib": gib(proc_status_kb("VmHWM")) if can_reset else None,
            "anon_before_gib": gib(anon0),
            "anon_peak_gib": gib(anon_peak),
            "anon_after_gib": gib(proc_status_kb("RssAnon")),
            "process_peak_gib": gib(maxrss_kb()),
            "notes": notes,
        }
        self.rows.append(row)
        log(f"phase {name}: {wall:.1f} s, phase peak {row['phase_peak_gib']} GiB, {notes}")
        if self.on_phase is not None:
            self.on_phase()


class Stopwatch:
    """Accumulated seconds per label, for breakdowns of calls made inside project code."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            log(f"  {label} ...")
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t0

        return timed

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in self.seconds.items()}


class TimedFaiss:
    """Stands in for the ``faiss`` module inside :mod:`embeddings.cluster`: everything is
    FAISS's own, but ``Kmeans.train`` and ``IndexFlatIP.search`` are timed."""

    def __init__(self, watch: Stopwatch) -> None:
        self._watch = watch
        self.last_kmeans: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(faiss, name)

    def Kmeans(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - mirrors faiss
        km: Any = faiss.Kmeans(*args, **kwargs)
        km.train = self._watch.wrap("lloyd (faiss.Kmeans.train)", km.train)
        self.last_kmeans = km
        return km

    def IndexFlatIP(self, *args: Any) -> Any:  # noqa: N802 - mirrors faiss
        index: Any = faiss.IndexFlatIP(*args)
        index.search = self._watch.wrap("assign all points (IndexFlatIP.search)", index.search)
        return index


# ---------------------------------------------------------------- vectors
def random_unit(n: int, dim: int, seed: int, block: int = 65_536, out: np.ndarray | None = None) -> np.ndarray:
    """Seeded standard-normal float32 ``[n, dim]``, rows normalised in place blockwise
    (into ``out`` when given, e.g. a memmap)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), dtype=np.float32) if out is None else out
    for s in range(0, n, block):
        blk = x[s : s + block]
        rng.standard_normal(out=blk, dtype=np.float32)
        blk /= np.linalg.norm(blk, axis=1, keepdims=True)
    return x


def clustered_unit(
    n: int, dim: int, seed: int, blobs: int, spread: float, block: int = 65_536, out: np.ndarray | None = None
) -> np.ndarray:
    """Like :func:`random_unit` but around ``blobs`` random centres: row = centre + noise of
    norm ~``spread``, normalised (cosine to its centre ~ 1 / sqrt(1 + spread**2))."""
    rng = np.random.default_rng(seed)
    centres = random_unit(blobs, dim, seed + 7919)
    x = np.empty((n, dim), dtype=np.float32) if out is None else out
    for s in range(0, n, block):
        blk = x[s : s + block]
        rng.standard_normal(out=blk, dtype=np.float32)
        blk *= np.float32(spread / np.sqrt(dim))
        blk += centres[rng.integers(0, blobs, len(blk))]
        blk /= np.linalg.norm(blk, axis=1, keepdims=True)
    return x


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int, block: int = 65_536) -> np.ndarray:
    """Exact inner-product top-``k`` row indices ``[Q, k]`` over all of ``base`` (blockwise)."""
    q = len(queries)
    best_s = np.full((q, k), -np.inf, dtype=np.float32)
    best_i = np.full((q, k), -1, dtype=np.int64)
    rows = np.arange(q)[:, None]
    for s in range(0, len(base), block):
        sims = queries @ base[s : s + block].T
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        all_s = np.concatenate([best_s, sims[rows, part]], axis=1)
        all_i = np.concatenate([best_i, part + s], axis=1)
        top = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
        best_s, best_i = all_s[rows, top], all_i[rows, top]
    return best_i


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True))
    return hits / (len(truth) * k)


def bench_vectors(args: argparse.Namespace, phases: Phases, out: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(dir=args.tmpdir, prefix="bench-scale-") as tmp:
        _bench_vectors(args, phases, out, Path(tmp))


def ivf_params(idx: VectorIndex) -> dict[str, int]:
    """nlist and training sample of an IVF ``VectorIndex`` (no reference kept: the index
    must be freeable by ``del``)."""
    ivf: Any = idx._index
    nlist = int(ivf.nlist)
    return {"nlist": nlist, "ivf_training_points": min(len(idx), nlist * int(ivf.cp.max_points_per_centroid)),
            "ivf_training_niter": int(ivf.cp.niter)}


def _bench_vectors(args: argparse.Namespace, phases: Phases, out: dict[str, Any], tmp: Path) -> None:
    n, dim, seed = args.n, args.dim, args.seed
    version = f"bench-{args.data}/{dim}"
    with phases.phase("generate vectors") as notes:
        dest: np.ndarray | None = None
        if args.vectors == "memmap":  # the caller's copy as reclaimable page cache, off the heap
            dest = np.lib.format.open_memmap(tmp / "vecs.npy", mode="w+", dtype=np.float32, shape=(n, dim))
        if args.data == "clustered":
            vecs = clustered_unit(n, dim, seed, args.blobs, args.spread, out=dest)
            notes["data"] = f"clustered: {args.blobs} blobs, spread {args.spread}"
        else:
            vecs = random_unit(n, dim, seed, out=dest)
            notes["data"] = "uniform random on the sphere"
        if isinstance(vecs, np.memmap):
            vecs.flush()
        notes["held_as"] = args.vectors
        ids = np.arange(n, dtype=np.int64)
        notes["array_gib"] = round(vecs.nbytes / GB, 2)

    # ---- build (default kind selection)
    watch = Stopwatch()
    real_make = index_mod.make_index

    def make_index_timed(*a: Any, **kw: Any) -> Any:
        index = watch.wrap("train (make_index)", real_make)(*a, **kw)
        with contextlib.suppress(AttributeError, TypeError):
            index.add_with_ids = watch.wrap("add_with_ids", index.add_with_ids)
        return index

    with (
        phases.phase("build index (all ids)") as notes,
        mock.patch.object(index_mod, "l2_normalize", watch.wrap("normalise (l2_normalize)", index_mod.l2_normalize)),
        mock.patch.object(index_mod, "make_index", make_index_timed),
    ):
        idx = VectorIndex(dim, version, seed=seed).build(ids, vecs)
        with contextlib.suppress(AttributeError, KeyError):
            del idx._index.__dict__["add_with_ids"]  # drop the timing wrapper (a reference cycle)
        notes["kind"] = idx.kind
        notes.update(watch.rounded())
    index_info: dict[str, Any] = {"kind": idx.kind, "ivf_threshold": idx.ivf_threshold, "count": len(idx)}
    default_nprobe = idx.nprobe
    if idx.kind == "ivf":  # read back from the FAISS object (private attribute: reporting only)
        index_info.update(ivf_params(idx))
        index_info["nprobe_default"] = default_nprobe
    out["index"] = index_info

    # ---- search + recall
    k = 10
    rng = np.random.default_rng(seed + 1)
    if args.data == "clustered":  # fresh points from the same blobs, not stored
        fresh = clustered_unit(args.queries, dim, seed + 1, args.blobs, args.spread)
    else:
        fresh = random_unit(args.queries, dim, seed + 1)
    stored_rows = np.sort(rng.choice(n, size=min(args.queries, n), replace=False))
    stored = np.ascontiguousarray(vecs[stored_rows])
    query_sets = {"fresh (not stored)": fresh, "stored items": stored}
    log("exact ground truth (numpy brute force over all vectors) ...")
    t0 = time.perf_counter()
    truth = {name: ids[exact_topk(vecs, q, k)] for name, q in query_sets.items()}
    out["ground_truth_s"] = round(time.perf_counter() - t0, 2)
    searches: list[dict[str, Any]] = []
    first_found: np.ndarray | None = None
    with phases.phase(f"search {args.queries} queries x2 sets (k=10)") as notes:
        for name, q in query_sets.items():
            t0 = time.perf_counter()
            _, found = idx.search(q, k)
            dt = time.perf_counter() - t0
            if first_found is None:
                first_found = found
            searches.append({"queries": name, "nprobe": default_nprobe, "seconds": round(dt, 3),
                             "ms_per_query": round(1000 * dt / len(q), 3),
                             "recall_at_10": round(recall_at_k(found, truth[name]), 4)})
        notes["recall@10"] = {s["queries"]: s["recall_at_10"] for s in searches}
    if idx.kind == "ivf" and default_nprobe is not None:
        nlist = int(index_info["nlist"])
        for probe in dict.fromkeys(min(nlist, m * default_nprobe) for m in args.nprobe_mult):
            if probe == default_nprobe:
                continue
            idx.nprobe = probe
            for name, q in query_sets.items():
                t0 = time.perf_counter()
                _, found = idx.search(q, k)
                dt = time.perf_counter() - t0
                searches.append({"queries": name, "nprobe": probe, "seconds": round(dt, 3),
                                 "ms_per_query": round(1000 * dt / len(q), 3),
                                 "recall_at_10": round(recall_at_k(found, truth[name]), 4)})
        idx.nprobe = default_nprobe
    out["search"] = searches

    # ---- save + load (original freed before loading: only one copy in memory)
    path = tmp / "index.faiss"
    with phases.phase("save index") as notes:
        idx.save(path)
        notes["file_gib"] = round(path.stat().st_size / GB, 2)
    freed = weakref.ref(idx._index)
    del idx
    gc.collect()
    if freed() is not None:
        log("warning: the built index is still referenced; load-phase memory includes it")
    with phases.phase("load index (sha256 checked)") as notes:
        loaded = VectorIndex.load(path, expected_version=version, expected_dim=dim)
        notes["kind"], notes["count"], notes["nprobe"] = loaded.kind, len(loaded), loaded.nprobe
    _, again = loaded.search(fresh, k)
    out["load_same_results"] = bool(first_found is not None and np.array_equal(again, first_found))
    del loaded
    path.unlink()
    gc.collect()

    # ---- k-means (the project's entry point) and grid pages
    k_clusters = args.k if args.k is not None else max(choose_k(n, 4), min(2 * 2, max(1, n // 4)))
    out["kmeans_k"] = {"k": k_clusters, "source": "--k" if args.k is not None else
                       "service cluster job: max(choose_k(n, 4), min(2*classes, n//4)), max_k cap 1000"}
    kwatch = Stopwatch()
    tfaiss = TimedFaiss(kwatch)
    with (
        phases.phase(f"k-means k={k_clusters} (incl. assigning all points)") as notes,
        mock.patch.object(cluster_mod, "faiss", tfaiss),
        mock.patch.object(cluster_mod, "_kmeans_pp", kwatch.wrap("k-means++ init (sample)", cluster_mod._kmeans_pp)),
        mock.patch.object(cluster_mod, "l2_normalize", kwatch.wrap("normalise", cluster_mod.l2_normalize)),
    ):
        centroids, assign, dist = kmeans(vecs, k_clusters, seed=0)
        notes.update(kwatch.rounded())
        km: Any = tfaiss.last_kmeans
        max_ppc = int(km.cp.max_points_per_centroid) if km is not None else 0
        niter = int(km.cp.niter) if km is not None else 0
        train_points = min(n, max_ppc * k_clusters)
        notes["lloyd_points"] = train_points  # faiss subsamples to k * max_points_per_centroid
    sizes = np.bincount(assign, minlength=len(centroids))
    out["kmeans"] = {
        "k": int(len(centroids)), "niter": niter, "max_points_per_centroid": max_ppc,
        "lloyd_training_points": train_points,
        "sample_note": "faiss.Kmeans subsamples to k * max_points_per_centroid points for the "
                       "Lloyd iterations; kmeans() then assigns all N points",
        "cluster_size_min": int(sizes.min()), "cluster_size_median": float(np.median(sizes)),
        "cluster_size_max": int(sizes.max()), "empty_clusters": int((sizes == 0).sum()),
        "mean_dist": round(float(dist.mean()), 4),
    }

    def reuse(*_a: Any, **_kw: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return centroids, assign, dist

    with phases.phase("grid pages 4/6/9 (k-means reused)") as notes, mock.patch.object(cluster_mod, "kmeans", reuse):
        for size in (4, 6, 9):
            t0 = time.perf_counter()
            pages = grid_pages(ids, vecs, page_size=size, seed=0, k=k_clusters)
            notes[f"size {size}"] = f"{len(pages)} pages, {time.perf_counter() - t0:.1f} s"
            del pages
    out["kmeans_runs_per_cluster_job"] = 3


# ---------------------------------------------------------------- embedding throughput
def synthetic_images(n: int, side: int, seed: int) -> list[Any]:
    """Smooth random colour fields plus noise (JPEG-compressible like photos), RGB PIL."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        low = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(low).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
        img += rng.normal(0.0, 8.0, img.shape).astype(np.float32)
        out.append(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)))
    return out


def bench_embed(args: argparse.Namespace, phases: Phases, out: dict[str, Any]) -> None:
    import timm
    import torch
    from timm.data import create_transform, resolve_model_data_config

    from learning.adapters import create_adapter
    from learning.backbones import DEFAULT_BACKBONE, lite0_state_dict, make_transform

    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch
    with phases.phase("embed: setup (models, images)") as notes:
        adapter: Any = create_adapter("classifier", classes=["a", "b"], image_size=args.image_size)
        size = adapter.image_size
        # plain timm: same architecture, same packaged weights, loaded the way create_backbone does
        model = timm.create_model(DEFAULT_BACKBONE, pretrained=False, num_classes=0)
        state = {k: v for k, v in lite0_state_dict().items() if not k.startswith("classifier.")}
        model.load_state_dict(state, strict=True)
        model.eval()
        cfg = dict(resolve_model_data_config(model))
        if args.image_size:
            cfg["input_size"] = (3, args.image_size, args.image_size)
        timm_tf = create_transform(**cfg, is_training=False)
        proj_tf = make_transform(adapter.backbone, image_size=size, train=False)
        images = synthetic_images(args.images, 256, args.seed)
        tmp = tempfile.TemporaryDirectory(prefix="bench-scale-img-", dir=args.tmpdir)
        paths = []
        for i, im in enumerate(images):
            p = Path(tmp.name) / f"{i:05d}.jpg"
            im.save(p, quality=90)
            paths.append(p)
        tensors = torch.stack([proj_tf(im) for im in images])
        notes.update(input_size=size, timm_data_config=str(cfg), jpeg_kib_mean=round(
            float(np.mean([p.stat().st_size for p in paths])) / 1024, 1))

    def timm_pil(ims: list[Any]) -> np.ndarray:
        outs = []
        with torch.inference_mode():
            for s in range(0, len(ims), batch):
                x = torch.stack([timm_tf(im) for im in ims[s : s + batch]])
                outs.append(model(x))
        return torch.cat(outs).numpy()

    def timm_tensors(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return torch.cat([model(x[s : s + batch]) for s in range(0, len(x), batch)]).numpy()

    def adapter_tensors(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return torch.cat([adapter.features(x[s : s + batch]) for s in range(0, len(x), batch)]).numpy()

    def embed_fn(ims: list[Any]) -> np.ndarray:
        return np.asarray(adapter.embed(ims, batch_size=batch))

    runs: dict[str, Callable[[int], Any]] = {
        "extract(paths): decode+preprocess+model": lambda m: extract(embed_fn, paths[:m], batch_size=batch),
        "adapter.embed(paths) (service path)": lambda m: adapter.embed(paths[:m], batch_size=batch),
        "adapter.embed(PIL): preprocess+model": lambda m: adapter.embed(images[:m], batch_size=batch),
        "timm eager + timm transform (PIL)": lambda m: timm_pil(images[:m]),
        "timm eager, model only (tensors)": lambda m: timm_tensors(tensors[:m]),
        "adapter.features, model only (tensors)": lambda m: adapter_tensors(tensors[:m]),
        "decode only: load_image(paths)": lambda m: [load_image(p) for p in paths[:m]],
        "preprocess only: project transform": lambda m: [proj_tf(im) for im in images[:m]],
        "preprocess only: timm transform": lambda m: [timm_tf(im) for im in images[:m]],
    }
    n = len(images)
    timings: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}  # (user, sys) seconds
    with phases.phase(f"embed: throughput ({n} images x {args.repeats} rounds)") as notes:
        for fn in runs.values():  # warm-up: one batch each
            fn(min(batch, n))
        for r in range(args.repeats):
            for name, fn in runs.items():
                r0 = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.perf_counter()
                fn(n)
                timings[name].append(time.perf_counter() - t0)
                r1 = resource.getrusage(resource.RUSAGE_SELF)
                cpu[name].append((r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime))
            log(f"embed round {r + 1}: " + ", ".join(f"{n / t[-1]:.1f}" for t in timings.values()))
        notes["torch_threads"] = torch.get_num_threads()
    rows = []
    for name, ts in timings.items():
        med = float(np.median(ts))
        user = float(np.median([u for u, _ in cpu[name]]))
        system = float(np.median([s for _, s in cpu[name]]))
        rows.append({"path": name, "images_per_s_median": round(n / med, 2),
                     "images_per_s_best": round(n / min(ts), 2), "ms_per_image_median": round(1000 * med / n, 2),
                     "cpu_user_ms_per_image": round(1000 * user / n, 2),
                     "cpu_sys_ms_per_image": round(1000 * system / n, 2),
                     "seconds": [round(t, 2) for t in ts]})
    # agreement: same weights + same tensors -> same features (timm's transform crops differently)
    ref = np.asarray(adapter.embed(images[:batch], batch_size=batch))
    plain = timm_tensors(tensors[:batch])
    plain /= np.linalg.norm(plain, axis=1, keepdims=True)
    via_timm_tf = timm_pil(images[:batch])
    via_timm_tf /= np.linalg.norm(via_timm_tf, axis=1, keepdims=True)
    out["embed"] = {
        "images": n, "image_side": 256, "input_size": size, "batch": batch, "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(), "rows": rows,
        "max_abs_diff_adapter_vs_timm_same_tensors": float(np.abs(ref - plain).max()),
        "mean_cos_adapter_vs_timm_transform": round(float((ref * via_timm_tf).sum(axis=1).mean()), 5),
        "project_transform": str(proj_tf).replace("\n", " "),
        "timm_transform": str(timm_tf).replace("\n", " "),
    }
    tmp.cleanup()


# ---------------------------------------------------------------- report
def meta(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    env = {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "MKL_", "MALLOC_")) or k == "LD_PRELOAD"}
    return {
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "env": env, "python": platform.python_version(), "torch": torch.__version__,
        "faiss": faiss.__version__, "numpy": np.__version__,
        "timm": __import__("timm").__version__,
        "torch_threads": torch.get_num_threads(), "faiss_omp_threads": faiss.omp_get_max_threads(),
        "cpu": cpu, "cpu_count": os.cpu_count(), "faiss_compile": faiss.get_compile_options(),
        "loadavg_start": os.getloadavg(), "mem_total_gib": gib(proc_meminfo_kb("MemTotal")),
    }


def proc_meminfo_kb(field: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {fmt(x)}" for k, x in v.items())
    return str(v)


def markdown(res: dict[str, Any]) -> str:
    m = res["meta"]
    lines = ["# bench_scale", "", f"`{m['command']}`", ""]
    lines.append(f"python {m['python']}, torch {m['torch']}, faiss {m['faiss']} ({m['faiss_compile'].strip()}), "
                 f"timm {m['timm']}, numpy {m['numpy']}; torch threads {m['torch_threads']}, "
                 f"faiss OpenMP threads {m['faiss_omp_threads']}; {m['cpu_count']} CPUs ({m['cpu']}), "
                 f"{m['mem_total_gib']} GiB RAM; env {m['env'] or '{}'}; load average at start "
                 f"{', '.join(f'{x:.2f}' for x in m['loadavg_start'])}, at end "
                 f"{', '.join(f'{x:.2f}' for x in res.get('loadavg_end', ()))}")
    lines += ["", "Memory (GiB). Each phase starts after `gc.collect()` and glibc `malloc_trim(0)`. *anon* = "
              "RssAnon (heap, numpy, FAISS; not file-backed pages such as the memmapped vectors): at the start, "
              "the largest value sampled every 0.05 s by a child process during the phase (can miss spikes shorter "
              "than that), and at the end; *phase peak RSS* = VmHWM at the end of the phase after resetting it "
              "(`/proc/self/clear_refs` = 5) at the start (includes file-backed pages); *process peak* = "
              "`ru_maxrss` so far.", ""]
    lines += ["| phase | wall s | anon before | anon peak | anon after | phase peak RSS | process peak | notes |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in res["phases"]:
        lines.append(f"| {r['phase']} | {r['wall_s']} | {fmt(r['anon_before_gib'])} | {fmt(r['anon_peak_gib'])} | "
                     f"{fmt(r['anon_after_gib'])} | {fmt(r['phase_peak_gib'])} | {fmt(r['process_peak_gib'])} | "
                     f"{fmt(r['notes'])} |")
    if "index" in res:
        lines += ["", f"Index: {fmt(res['index'])}. Exact ground truth (numpy, all vectors, not a project "
                  f"path): {res['ground_truth_s']} s. Loaded index returns the same results: "
                  f"{res['load_same_results']}.", "",
                  "| queries | nprobe | seconds | ms/query | recall@10 |", "|---|---:|---:|---:|---:|"]
        for s in res["search"]:
            lines.append(f"| {s['queries']} | {fmt(s['nprobe'])} | {s['seconds']} | {s['ms_per_query']} | "
                         f"{s['recall_at_10']} |")
        lines += ["", f"k-means: k = {res['kmeans_k']['k']} ({res['kmeans_k']['source']}); {fmt(res['kmeans'])}."]
    if "embed" in res:
        e = res["embed"]
        lines += ["", f"Embedding throughput: {e['images']} synthetic {e['image_side']}x{e['image_side']} JPEGs, "
                  f"input {e['input_size']} px, batch {e['batch']}, torch threads {e['torch_threads']}, "
                  f"median (best) of {e['repeats']} interleaved rounds after warm-up.", "",
                  "| path | images/s median | images/s best | wall ms/image | CPU user ms/image | "
                  "CPU sys ms/image |", "|---|---:|---:|---:|---:|---:|"]
        for r in e["rows"]:
            lines.append(f"| {r['path']} | {r['images_per_s_median']} | {r['images_per_s_best']} | "
                         f"{r['ms_per_image_median']} | {r['cpu_user_ms_per_image']} | {r['cpu_sys_ms_per_image']} |")
        lines += ["", f"Same weights check: max |adapter - timm| on the same tensors = "
                  f"{e['max_abs_diff_adapter_vs_timm_same_tensors']:.2e}; mean cosine adapter vs timm's own "
                  f"transform = {e['mean_cos_adapter_vs_timm_transform']}.",
                  f"Project transform: `{e['project_transform']}`; timm transform: `{e['timm_transform']}`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors (default 1,000,000)")
    ap.add_argument("--dim", type=int, default=1280, help="vector width (Lite0: 1280)")
    ap.add_argument("--k", type=int, default=None, help="k-means clusters (default: what the cluster job picks)")
    ap.add_argument("--data", choices=("random", "clustered"), default="random",
                    help="random: uniform on the sphere (default, worst case for IVF); clustered: blobs")
    ap.add_argument("--blobs", type=int, default=2000, help="clusters for --data clustered")
    ap.add_argument("--spread", type=float, default=1.0, help="noise norm around a blob centre (--data clustered)")
    ap.add_argument("--vectors", choices=("memmap", "memory"), default="memmap",
                    help="hold the generated vectors in a file-backed memmap under --tmpdir (default: the "
                         "benchmark's own copy is reclaimable page cache, so anon memory = what the project code "
                         "allocates) or in ordinary memory (as the service would hold them)")
    ap.add_argument("--queries", type=int, default=1000, help="search queries per query set")
    ap.add_argument("--nprobe-mult", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4],
                    help="IVF nprobe sweep as multiples of the default (default 1,2,4)")
    ap.add_argument("--images", type=int, default=512, help="synthetic images for the throughput part")
    ap.add_argument("--batch", type=int, default=32, help="batch size for both extractor and timm")
    ap.add_argument("--image-size", type=int, default=None, help="input size (default: timm data config)")
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds per embedding path")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: keep)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmpdir", default=None, help="where the index file and images are written")
    ap.add_argument("--skip-embed", action="store_true")
    ap.add_argument("--skip-index", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write JSON here and markdown beside it (.md)")
    args = ap.parse_args()

    res: dict[str, Any] = {"meta": meta(args), "args": {k: v for k, v in vars(args).items() if k != "out"}}

    def checkpoint() -> None:  # partial JSON after every phase, in case a later one dies
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({**res, "partial": True}, indent=1, default=str))

    phases = Phases(checkpoint)
    res["phases"] = phases.rows
    if not args.skip_index:  # first: the smallest process baseline for the big arrays
        bench_vectors(args, phases, res)
    if not args.skip_embed:
        bench_embed(args, phases, res)
    phases.sampler.close()
    res["loadavg_end"] = os.getloadavg()
    res["process_peak_gib"] = gib(maxrss_kb())
    text = markdown(res)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1, default=str))
        args.out.with_suffix(".md").write_text(text)
        log(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()

"""Throughput of prediction on Dask (``skxray.dask``) on a LocalCluster of this machine.

``benchmarks/scale.py`` imports :func:`measure_dask_predict`. Run alone, this
file writes ``--n-images`` phantom PNGs of 128 to 256 px to a temporary
folder, trains and saves a small CNN, measures the worker counts of
``--workers`` (0: without Dask) and prints the figures as JSON (nothing is
written to ``results/``)::

    nice -n 10 python benchmarks/_scale_dask.py --n-images 2000
"""

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np


def measure_dask_predict(model_path, paths, n_workers, *, partition_size=None):
    """Score ``paths`` with the saved model on a fresh LocalCluster of ``n_workers`` processes.

    The cluster (single-threaded worker processes) is started and closed
    here. The clock of ``wall_s`` runs from the first task submitted to the
    last result in input order; starting the cluster and loading the model
    on every worker (once each) is timed apart, as ``startup_s``.

    Parameters
    ----------
    model_path : str or path-like
        Folder of a saved skxray model.
    paths : sequence of str
        Image files.
    n_workers : int
        Worker processes.
    partition_size : int or None, default=None
        Files per task; None lets :class:`skxray.dask.DaskPredictor` choose.

    Returns
    -------
    figures : dict
        ``n_workers``, ``n_images``, ``n_unreadable``, ``partition_size``,
        ``n_partitions``, ``wall_s``, ``images_per_s`` (readable images per
        second of ``wall_s``) and ``startup_s``.
    """
    from distributed import Client, LocalCluster

    from skxray.dask import DaskPredictor

    start = time.perf_counter()
    with LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(n_workers)
        with DaskPredictor(model_path, client, partition_size=partition_size) as predictor:
            ready = time.perf_counter()
            predictions = predictor.predict(paths)
            wall = time.perf_counter() - ready
    n_readable = len(predictions.files)
    return {
        "n_workers": int(n_workers),
        "n_images": len(paths),
        "n_unreadable": len(predictions.unreadable),
        "partition_size": predictions.partition_size,
        "n_partitions": predictions.n_partitions,
        "wall_s": round(wall, 3),
        "images_per_s": round(n_readable / wall, 2),
        "startup_s": round(ready - start, 3),
    }


def measure_serial_predict(model_path, paths):
    """The same figures for ``skxray predict`` without Dask: one process, all files at once.

    ``n_workers`` is 0; ``startup_s`` is the model's load. Runs in this
    process, with the torch threads it has.
    """
    from skxray.dask import read_images, score_images
    from skxray.models import load

    start = time.perf_counter()
    model = load(model_path)
    ready = time.perf_counter()
    X, readable, unreadable = read_images(model, paths)
    score_images(model, X)
    wall = time.perf_counter() - ready
    return {
        "n_workers": 0,
        "n_images": len(paths),
        "n_unreadable": len(unreadable),
        "partition_size": len(paths),
        "n_partitions": 1,
        "wall_s": round(wall, 3),
        "images_per_s": round(len(readable) / wall, 2),
        "startup_s": round(ready - start, 3),
    }


def write_phantom_pngs(folder, n_images, *, min_size=128, max_size=256, random_state=0):
    """``n_images`` phantom PNGs of sizes between ``min_size`` and ``max_size`` px, in ``folder``."""
    from PIL import Image

    from skxray.datasets import make_phantom_cxr

    rng = np.random.RandomState(random_state)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths, chunk = [], 100
    for start in range(0, n_images, chunk):
        size = int(rng.randint(min_size, max_size + 1))
        X, _ = make_phantom_cxr(min(chunk, n_images - start), image_size=size, random_state=start)
        for i, img in enumerate(X, start=start):
            path = folder / f"{i:06d}.png"
            Image.fromarray(np.round(img * 255).astype(np.uint8)).save(path, compress_level=1)
            paths.append(str(path))
    return paths


def _small_model(folder, image_size):
    from skxray.datasets import make_phantom_cxr
    from skxray.models import CNNClassifier

    X, y = make_phantom_cxr(200, image_size=image_size, random_state=0)
    model = CNNClassifier(image_size=image_size, max_epochs=2, random_state=0).fit(X, y)
    return str(model.save(Path(folder) / "model"))


def main(argv=None):
    import _common  # noqa: F401 - puts this checkout's skxray first on the path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=64, help="the model's input side (default 64)")
    parser.add_argument(
        "--workers", default="1,2", help="worker counts to measure, in this order; 0 is without Dask (default 1,2)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="skxray-dask-bench-") as tmp:
        paths = write_phantom_pngs(Path(tmp) / "images", args.n_images)
        model_path = _small_model(tmp, args.image_size)
        rows = [
            measure_dask_predict(model_path, paths, int(n)) if int(n) else measure_serial_predict(model_path, paths)
            for n in args.workers.split(",")
        ]
    fewest = min((row for row in rows if row["n_workers"]), key=lambda row: row["n_workers"])
    base = fewest["images_per_s"] / fewest["n_workers"]
    for row in rows:
        if row["n_workers"]:  # throughput per worker, relative to the fewest workers measured
            row["efficiency"] = round(row["images_per_s"] / (base * row["n_workers"]), 3)
    print(json.dumps({"model_image_size": args.image_size, "results": rows}, indent=2))
    return 0 if all(math.isfinite(r["images_per_s"]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

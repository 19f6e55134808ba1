"""Scale benchmark: streaming from disk, loader workers, data parallelism, Dask prediction.

``python benchmarks/scale.py`` writes ``benchmarks/results/scale.json``. It
generates PNG phantoms of 256 x 256 px in a temporary folder (deleted at the
end, never committed) and measures, on this machine:

``workers``
    training images/s of a small CNN reading the files with ``num_workers``
    0, 1 and 2 (interleaved repetitions, best of each kept);
``memory``
    the peak RSS growth of ``fit`` on 2,000 and on 20,000 files, each in a
    fresh process, which must stay flat (the files are streamed);
``ddp``
    data-parallel training throughput with 1 and 2 processes
    (``torchrun --standalone``, gloo on the CPU, ``accelerator="auto"``) and
    the parallel efficiency;
``dask``
    prediction throughput on a Dask ``LocalCluster`` with 1 and 2 workers,
    measured by ``benchmarks/_scale_dask.py`` (``measure_dask_predict``).

``--sections`` picks some of them. CUDA figures (mixed precision against
float32, the best batch size) need a GPU and are recorded as not measured
when none is present. The machine the committed file comes from has 2 CPU
cores shared with other jobs: every parallel figure is bounded by those 2
cores, which the JSON says next to the numbers.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    REPO_DIR,
    SHARED_CPU_NOTE,
    command_line,
    default_out,
    log,
    machine_info,
    write_json,
)

SECTIONS = ("workers", "memory", "ddp", "dask")
MB = 2**20
TWO_CORES_NOTE = (
    "This machine has {cores} CPU core(s), shared with other jobs. Loader workers and a second "
    "training process compete with the training process for those cores, so neither can come "
    "near linear scaling here; on a GPU machine the workers feed the GPU instead of competing "
    "with it, and each process of data-parallel training has a device of its own."
)


# --------------------------------------------------------------------------- data


def write_phantoms(folder, n_images, image_size, distinct, chunk=100):
    """``n_images`` PNG files made from ``distinct`` phantoms (each written n/distinct times).

    Generating and encoding a 256 px phantom costs ~70 ms on this CPU, so
    20,000 distinct ones would take longer than every measurement together;
    the loader decodes every file whatever its pixels, so copies measure the
    same thing.
    """
    from PIL import Image

    from skxray.datasets import make_phantom_cxr

    folder = Path(folder)
    encoded, labels = [], []
    for start in range(0, distinct, chunk):
        X, y = make_phantom_cxr(min(chunk, distinct - start), image_size=image_size, random_state=start)
        for img, label in zip(X, y):
            path = folder / f"distinct-{len(encoded):05d}.png"
            Image.fromarray(np.round(img * 255).astype(np.uint8)).save(path, compress_level=1)
            encoded.append(path)
            labels.append(label)
    paths, targets = [], []
    for i in range(n_images):
        path = folder / f"{i:06d}.png"
        shutil.copyfile(encoded[i % distinct], path)
        paths.append(str(path))
        targets.append(labels[i % distinct])
    return np.array(paths, dtype=object), np.array(targets, dtype=object)


def _classifier(args, **kw):
    from skxray.models import CNNClassifier

    # Small on purpose: decoding and resizing a 256 px file is then a large
    # share of each step, which is what loader workers take off the trainer.
    params = dict(
        filters=(8, 16), dense_units=16, image_size=args.model_size, batch_size=args.batch_size,
        max_epochs=1, validation_fraction=None, ood=False, random_state=0, device="cpu",
    )
    return CNNClassifier(**{**params, **kw})


# --------------------------------------------------------------------------- workers


def measure_workers(args, paths, y, model_dir):
    import torch

    torch.set_num_threads(1)
    n = args.worker_images
    rows, best = [], {}
    for rep in range(args.repeats):
        for workers in (0, 1, 2):
            clf = _classifier(args, num_workers=workers)
            start = time.perf_counter()
            clf.fit(paths[:n], y[:n])
            seconds = time.perf_counter() - start
            log(f"workers={workers} rep {rep}: {n / seconds:.1f} images/s")
            best[workers] = min(best.get(workers, np.inf), seconds)
            if workers == 0 and rep == 0:
                clf.save(model_dir)  # the model Dask predicts with
    for workers, seconds in best.items():
        rows.append(dict(
            section="workers", num_workers=workers, images=n, seconds=seconds,
            images_per_s=n / seconds, speedup_vs_0=best[0] / seconds,
        ))
    return rows


# --------------------------------------------------------------------------- memory


def child_memory(args):
    """In a fresh process: fit on the first ``args.images`` paths, print the peak RSS growth."""
    import psutil
    import torch

    torch.set_num_threads(1)
    paths = np.array(json.loads(Path(args.paths_file).read_text()), dtype=object)[: args.images]
    y = np.array(["Covid-19", "Normal"] * (len(paths) // 2 + 1), dtype=object)[: len(paths)]
    clf = _classifier(args)
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    peak = [rss0]
    done = threading.Event()

    def sample():
        # ru_maxrss would not do: importing torch peaks higher than a small fit.
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    clf.fit(paths, y)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    print(json.dumps({"n": len(paths), "rss0": rss0, "peak_growth": peak[0] - rss0, "seconds": seconds}))


def measure_memory(args, paths):
    paths_file = Path(args.tmp) / "paths.json"
    paths_file.write_text(json.dumps(paths.tolist()))
    rows = []
    for n in args.memory_images:
        result = _run_child(args, ["--child", "memory", "--paths-file", str(paths_file), "--images", str(n)])
        out = json.loads(result.stdout.strip().splitlines()[-1])
        log(f"memory N={n}: peak growth {out['peak_growth'] / MB:.1f} MB in {out['seconds']:.0f} s")
        rows.append(dict(
            section="memory", images=n, peak_rss_growth_mb=out["peak_growth"] / MB,
            rss_before_fit_mb=out["rss0"] / MB, seconds=out["seconds"],
            pixels_if_in_memory_mb=n * args.model_size**2 * 4 / MB,
        ))
    return rows


# --------------------------------------------------------------------------- ddp


def child_ddp(args):
    """One process of a data-parallel run: a warm-up fit, then the timed one."""
    import torch

    torch.set_num_threads(1)
    paths = np.array(json.loads(Path(args.paths_file).read_text()), dtype=object)[: args.images]
    y = np.array(["Covid-19", "Normal"] * (len(paths) // 2 + 1), dtype=object)[: len(paths)]
    # Process group, DDP wrapping and imports happen in the warm-up.
    _classifier(args).fit(paths[: 4 * args.batch_size], y[: 4 * args.batch_size])
    start = time.perf_counter()
    clf = _classifier(args).fit(paths, y)
    seconds = time.perf_counter() - start
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    rank = int(os.environ.get("RANK", "0"))
    out = Path(args.out_dir) / f"rank{rank}.json"
    out.write_text(json.dumps({"rank": rank, "world": world, "seconds": seconds, "n_iter": clf.n_iter_}))


def measure_ddp(args, paths):
    paths_file = Path(args.tmp) / "paths.json"
    paths_file.write_text(json.dumps(paths.tolist()))
    rows = []
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    n = args.ddp_images
    best = {}
    for rep in range(args.repeats):
        for procs in (1, 2):
            out_dir = Path(tempfile.mkdtemp(dir=args.tmp))
            child = ["--child", "ddp", "--paths-file", str(paths_file), "--images", str(n), "--out-dir", str(out_dir)]
            _run_child(args, child, torchrun=[torchrun, "--standalone", f"--nproc_per_node={procs}"])
            runs = [json.loads(p.read_text()) for p in sorted(out_dir.glob("rank*.json"))]
            assert len(runs) == procs and all(r["world"] == procs for r in runs), runs
            seconds = max(r["seconds"] for r in runs)
            log(f"ddp processes={procs} rep {rep}: {n / seconds:.1f} images/s")
            best[procs] = min(best.get(procs, np.inf), seconds)
    for procs, seconds in best.items():
        speedup = best[1] / seconds
        rows.append(dict(
            section="ddp", processes=procs, images=n, seconds=seconds, images_per_s=n / seconds,
            speedup_vs_1=speedup, efficiency=speedup / procs,
        ))
    return rows


# --------------------------------------------------------------------------- dask


def measure_dask(args, paths, model_dir):
    # Written by the Dask prediction work; imported here only, so the other
    # sections run without it.
    from _scale_dask import measure_dask_predict

    rows = []
    subset = list(paths[: args.dask_images])
    for n_workers in (1, 2):
        result = measure_dask_predict(str(model_dir), subset, n_workers)
        log(f"dask workers={n_workers}: {result}")
        rows.append({"section": "dask", **result, "n_workers": n_workers})
    per_s = {r["n_workers"]: r["images_per_s"] for r in rows}
    for r in rows:
        r["speedup_vs_1"] = r["images_per_s"] / per_s[1]
        r["efficiency"] = r["speedup_vs_1"] / r["n_workers"]
    return rows


# --------------------------------------------------------------------------- driver


def _run_child(args, child_args, torchrun=None):
    script = str(Path(__file__).resolve())
    common = ["--model-size", str(args.model_size), "--batch-size", str(args.batch_size)]
    cmd = [*(torchrun or [sys.executable]), script, *child_args, *common]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_DIR), env.get("PYTHONPATH")]))
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {SECTIONS}")
    p.add_argument("--n-images", type=int, default=20_000, help="PNG files written")
    p.add_argument("--distinct", type=int, default=200, help="distinct phantoms among them")
    p.add_argument("--image-size", type=int, default=256, help="side of the PNG files")
    p.add_argument("--model-size", type=int, default=64, help="image_size of the CNN")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--worker-images", type=int, default=1_280)
    p.add_argument("--memory-images", type=lambda s: [int(v) for v in s.split(",")], default=[2_000, 20_000])
    p.add_argument("--ddp-images", type=int, default=1_920)
    p.add_argument("--dask-images", type=int, default=2_000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="small sizes, into results/quick/")
    p.add_argument("--out", default=None)
    # Internal: the measurements that run in a process of their own.
    p.add_argument("--child", choices=("memory", "ddp"), help=argparse.SUPPRESS)
    p.add_argument("--paths-file", help=argparse.SUPPRESS)
    p.add_argument("--images", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.n_images, args.distinct, args.worker_images = 600, 100, 192
        args.memory_images, args.ddp_images, args.dask_images, args.repeats = [100, 600], 256, 200, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child == "memory":
        return child_memory(args)
    if args.child == "ddp":
        return child_ddp(args)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    out = Path(args.out) if args.out else default_out("scale.json", args.quick)
    rows = []
    with tempfile.TemporaryDirectory(prefix="skxray-scale-") as tmp:
        args.tmp = tmp
        t0 = time.perf_counter()
        paths, y = write_phantoms(Path(tmp), args.n_images, args.image_size, args.distinct)
        log(f"{len(paths)} PNG files of {args.image_size} px written in {time.perf_counter() - t0:.0f} s")
        model_dir = Path(tmp) / "model"
        if "workers" in sections or "dask" in sections:
            rows += measure_workers(args, paths, y, model_dir) if "workers" in sections else []
            if not model_dir.exists():
                _classifier(args).fit(paths[:256], y[:256]).save(model_dir)
        if "memory" in sections:
            rows += measure_memory(args, paths)
        if "ddp" in sections:
            rows += measure_ddp(args, paths)
        if "dask" in sections:
            rows += measure_dask(args, paths, model_dir)
    import torch

    cuda = torch.cuda.is_available()
    payload = {
        "machine": machine_info("cuda" if cuda else "cpu"),
        "settings": {
            "command": command_line(), "sections": sections, "files": args.n_images,
            "distinct_phantoms": args.distinct, "file_size_px": args.image_size,
            "model": f"CNNClassifier(filters=(8, 16), dense_units=16, image_size={args.model_size}), "
                     f"batch_size={args.batch_size} per process, 1 epoch, no validation split, ood=False",
            "threads_per_process": 1, "repeats": args.repeats, "keep": "best of the repeats",
            "cuda": "measured" if cuda else "not measured: no CUDA device on this machine (AMP vs "
                    "float32 and the best batch size need one)",
            "note": SHARED_CPU_NOTE + " " + TWO_CORES_NOTE.format(cores=os.cpu_count()),
        },
        "results": rows,
    }
    write_json(out, payload)
    log(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

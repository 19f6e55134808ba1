"""Speed of skxray on the darkcovidnet images, as ratios measured in one run.

Every comparison runs its variants in the same process (or in child
processes started one after the other), interleaved (A, B, A, B, ...), and
keeps the best (shortest) time of each: on a machine shared with other jobs
only such ratios mean something; absolute images/s do not.

Sections (``--sections``, all by default):

``overhead``
    training images/s of ``CNNClassifier.fit`` vs a hand-written PyTorch
    loop with the same module (``CNNClassifier().build_module``), the same
    images, batch size, optimizer (Adam, lr 1e-3, weight decay 1e-4) and
    loss; the loop either uses a ``DataLoader`` over a ``TensorDataset`` or
    slices a shuffled index. Target: ratio >= 0.95.
``limit``
    training images/s of ``CNNClassifier.fit`` against its own limit in the
    same run: a hand-written PyTorch loop with the same module, optimizer
    and loss, the images already in memory as one tensor (on the GPU on a
    CUDA device), shuffled by fancy indexing, the same batch size and
    precision (float32; also bfloat16 autocast where the device has native
    bfloat16: a GPU, or a CPU with AVX-512 BF16 or AMX). Also the estimator
    as it was before the batch iterator (``DataLoader`` per image and
    collate, forced by hiding the arrays from ``BatchIterator``). The
    variants are interleaved; ratios are medians over the repetitions (at
    least 5), each repetition's ratio taken from side-by-side runs, and the
    1-minute load average is recorded before each repetition. Target: >= 0.98.
``limit_resnet``
    the frozen ``ResNet50Classifier``'s cached-feature ``fit`` (random
    weights: the cost does not depend on their values) against its own
    limit in the same run: a hand-written loop that builds the same
    ResNet-50 and passes the images, already one tensor in memory (on the
    GPU on a CUDA device), through it in slices of the same batch size, in
    float32 under ``torch.no_grad``, in NHWC (channels_last, the limit) and
    NCHW layout. Also the estimator as it was before (a ``DataLoader`` per
    image and collate, NCHW). Interleaved and reported as ``limit``; a
    section of its own so that it can be rerun alone (``--sections
    limit_resnet --merge``).
``limit_compile``
    ``CNNClassifier.fit`` with ``compile=False`` (the default) and
    ``compile=True`` (``torch.compile`` through skorch), and the
    hand-written loop of ``limit`` compiled, against that loop uncompiled
    in the same run (interleaved, reported as ``limit``). The timed runs
    reuse the compiled code (the untimed warm-up compiles it); the one-off
    compilation is reported apart: the wall time of a first compiled fit,
    with an empty inductor cache, beside an uncompiled fit's (wall time:
    inductor compiles in worker processes, which this process's CPU time
    does not count).
``resnet_cache``
    fit time of a frozen ``ResNet50Classifier`` for 10 epochs with
    ``cache_features=True`` vs ``False``. Target: >= 8x faster.
``resnet_store``
    5-fold ``cross_val_score`` of a frozen ``ResNet50Classifier`` with
    ``feature_cache_dir`` (an empty folder at the start of each run) vs
    without: the backbone features are shared by the folds' fits and
    predictions.
``loading``
    ``ImageLoader(image_size=128)`` images/s with ``n_jobs=1`` vs ``2``
    (page cache warmed first).
``streaming``
    ``CNNClassifier`` (128 px) trained on file paths read during training
    vs on arrays already in memory: training images/s and peak RSS, each in
    a fresh child process so that peak RSS is its own.
``inference``
    ``predict_proba`` images/s of each model at its benchmark image size
    (``accuracy.MODEL_SETTINGS``), and of the three together (soft voting).
``roofline``
    achieved GFLOP/s of CNN training (FLOPs counted with
    ``torch.utils.flop_counter.FlopCounterMode``) as a fraction of float32
    matmul GFLOP/s measured in the same run, for variants: thread counts
    (and ``OMP_WAIT_POLICY=PASSIVE``), ``channels_last``, larger batches,
    ``torch.compile``.
``profile``
    where a training step of the default CNN (the estimator's module, NHWC,
    batch 32, Adam) spends its time, at two image sizes (64 and 128 px), in
    float32 and (where the CPU has bfloat16 instructions) under bfloat16
    autocast as the estimator runs it, on 1 thread: ``torch.profiler``'s
    self time per op group (:data:`PROFILE_GROUPS`; medians of interleaved
    repetitions, the load average before each), the whole step's GFLOP/s
    per CPU second against the matmul rate measured in the same run, and
    each convolution's forward pass and two gradients timed alone, in
    GFLOP/s against the matmul rate of its precision. The FLOP count of
    ``roofline`` (``FlopCounterMode``) is checked against the profile's
    (the convolutions' recorded shapes, the matrix products' ``with_flops``).
    CPU only.
``segmenter``
    ``skxray.segmentation.segment_lungs`` images/s on 128 px images (the
    audit's size), with the two-largest-parts clean-up (the default) and
    without, in a fresh child process whose peak RSS is reported. Target:
    >= 200 images/s.
``augment``
    augmentation alone: each ``xray_augmentation`` preset on batches of 32
    real images at 128 and 256 px, image by image (the previous path, on
    the host) vs ``augment_batch`` (the whole batch at once, on the
    device); and ``CNNClassifier.fit`` (64 px) with the "light" and
    "strong" presets, batched vs per image (the preset wrapped in a plain
    callable). Interleaved repetitions, medians of the side-by-side
    speed-ups (CPU time on a CPU device, wall time on a GPU).
``cuda``
    on a CUDA device only (skipped elsewhere): training images/s of
    ``CNNClassifier.fit`` at 256 px on arrays in memory, float32 vs
    bfloat16 autocast (``amp``) at batch 32, 128 and 256, and on file paths
    decoded during training with ``num_workers`` 0, 4 and 8; and
    ``predict_proba`` images/s of a frozen ``ResNet50Classifier`` (224 px)
    in float32 vs bfloat16 autocast. What the library's CUDA defaults
    (``amp="auto"``, the batch size) rest on.

Writes ``benchmarks/results/speed.json`` (``--quick``: ``results/quick/``).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    CLASSES_BINARY,
    Stopwatch,
    command_line,
    configure_threads,
    default_out,
    finish,
    load_metadata,
    log,
    machine_info,
    phantom_bunch,
    require_data,
    resolve_device,
    write_json,
)

SECTIONS = ("overhead", "limit", "limit_resnet", "limit_compile", "resnet_cache", "resnet_store", "loading", "streaming", "inference", "roofline",
            "cuda", "segmenter", "profile", "augment")
SEED = 0

# Sizes of each measurement: (full, quick).
SIZES = {
    "overhead": {"n": (256, 96), "epochs": (2, 1), "reps": (5, 2), "image_size": (64, 64)},
    "limit": {"n": (256, 64), "epochs": (2, 1), "reps": (15, 5), "image_size": (64, 32)},
    "limit_resnet": {"n": (256, 16), "reps": (5, 2), "image_size": (128, 32)},
    "limit_compile": {"n": (256, 32), "epochs": (2, 1), "reps": (5, 2), "image_size": (64, 32)},
    "resnet_cache": {"n": (128, 32), "epochs": (10, 10), "image_size": (224, 64)},
    "resnet_store": {"n": (64, 32), "epochs": (10, 10), "folds": (5, 5), "image_size": (224, 64)},
    "loading": {"n": (1124, 150), "reps": (2, 1)},
    "streaming": {"n": (1124, 48), "epochs": (1, 1), "image_size": (128, 64)},
    "inference": {"n": (512, 64), "n_resnet": (128, 16), "reps": (2, 1)},
    "segmenter": {"n": (512, 64), "reps": (3, 1), "image_size": (128, 128)},
    "roofline": {"n": (384, 48), "epochs": (2, 1), "reps": (2, 1), "image_size": (64, 64)},
    "profile": {"steps": (5, 2), "reps": (5, 1), "micro_reps": (5, 2), "image_size": (64, 32),
                "image_size_large": (128, 64)},
    "augment": {"batches": (8, 2), "reps": (7, 2), "image_sizes": ((128, 256), (32,)),
                "n_fit": (256, 32), "epochs": (2, 1), "fit_image_size": (64, 32)},
    "cuda": {"n": (624, 48), "epochs": (3, 1), "epochs_paths": (2, 1), "reps": (2, 1),
             "image_size": (256, 64), "resnet_image_size": (224, 32)},
}


# On a GPU the CPU-sized runs last milliseconds: more epochs or images there
# (the binary task has 624 images, so epochs scale where images cannot).
CUDA_SCALE = {
    ("overhead", "epochs"): 10,
    ("roofline", "epochs"): 10,
    ("limit", "epochs"): 10,
    ("limit", "image_size"): 4,  # the issue's GPU figures are at 256 px
    ("limit_resnet", "n"): 4,
    ("limit_resnet", "image_size"): 1.75,  # 224 px, the issue's GPU figure
    ("resnet_cache", "n"): 4,
    ("resnet_store", "n"): 4,
    ("inference", "n_resnet"): 4,
}
_SCALE = {"factor": {}}


def size(section, key, quick):
    value = SIZES[section][key][1 if quick else 0]
    return value * _SCALE["factor"].get((section, key), 1)


# --------------------------------------------------------------------------
# data


class Images:
    """Real images (or phantoms), decoded on demand per size, binary task."""

    def __init__(self, phantom):
        self.phantom = phantom
        self._cache = {}
        if phantom:
            base = phantom_bunch(64)
            self._base = base.data
            self.y = base.target
            self.paths = None
        else:
            meta = load_metadata(require_data())
            self.y = np.asarray(meta.target, dtype=object)
            self.paths = np.asarray(meta.filenames, dtype=object)
        # A fixed shuffled order, so that "the first n" mixes the classes.
        self.order = np.random.default_rng(SEED).permutation(len(self.y))

    def binary(self, n, image_size):
        """``n`` Covid-19 / No_findings images (first of a fixed shuffle) and labels."""
        idx = [i for i in self.order if self.y[i] in CLASSES_BINARY][:n]
        return self.pixels(idx, image_size), self.y[idx]

    def binary_paths(self, n):
        """The files of :meth:`binary` (same images, same order) and labels."""
        idx = [i for i in self.order if self.y[i] in CLASSES_BINARY][:n]
        return np.asarray(self.paths[idx], dtype=object), self.y[idx]

    def pixels(self, idx, image_size):
        key = (tuple(idx), image_size)
        if key not in self._cache:
            if self.phantom:
                from skxray.preprocessing import resize_images

                self._cache[key] = resize_images(self._base[idx], image_size)
            else:
                from skxray.preprocessing import ImageLoader

                self._cache[key] = ImageLoader(image_size=image_size, n_jobs=-1).fit_transform(
                    list(self.paths[idx])
                )
        return self._cache[key]


def interleaved(variants, reps, cpu_times=None):
    """Run each callable ``reps`` times, interleaved; best time and all times per name.

    A callable returns wall seconds, or (wall, cpu) seconds; with a dict
    ``cpu_times``, the best CPU time of each name is stored in it.
    """
    times = {name: [] for name in variants}
    cpus = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            out = fn()
            wall, cpu = out if isinstance(out, tuple) else (out, None)
            times[name].append(wall)
            cpus[name].append(cpu)
    if cpu_times is not None:
        cpu_times.update({name: min(c) for name, c in cpus.items() if None not in c})
    return {name: (min(ts), ts) for name, ts in times.items()}


# --------------------------------------------------------------------------
# overhead


def conv_module(image_size, channels_last=True):
    from skxray.models import CNNClassifier

    # CNNClassifier's defaults: filters (32, 64, 128), 3x3, dense 64, dropout 0.3, batch norm,
    # NHWC (channels_last) convolutions; channels_last=False gives the NCHW variant.
    extra = {} if channels_last else {"module__channels_last": False}
    return CNNClassifier(**extra).build_module((1, image_size, image_size))


def manual_fit(X, y01, *, epochs, batch_size, device, mode, channels_last=True,
               compile_module=False, image_size=64):
    """Hand-written loop; returns seconds (module built and moved inside, like fit)."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    cuda = device == "cuda"
    with Stopwatch(cuda) as t:
        torch.manual_seed(SEED)
        # The module converts its input to its own memory format in forward.
        module = conv_module(image_size, channels_last).to(device)
        opt = torch.optim.Adam(module.parameters(), lr=1e-3, weight_decay=1e-4)
        loss_fn = nn.BCEWithLogitsLoss()
        step_module = torch.compile(module) if compile_module else module
        Xt = torch.from_numpy(np.ascontiguousarray(X[:, None], dtype=np.float32))
        yt = torch.from_numpy(y01.astype(np.float32))
        gen = torch.Generator().manual_seed(SEED)
        module.train()
        for _ in range(epochs):
            if mode == "dataloader":
                batches = DataLoader(TensorDataset(Xt, yt), batch_size=batch_size, shuffle=True,
                                     generator=gen)
            else:
                perm = torch.randperm(len(Xt), generator=gen)
                batches = ((Xt[i], yt[i]) for i in perm.split(batch_size))
            for xb, yb in batches:
                xb = xb.to(device, non_blocking=True)
                yb = yb.to(device, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(step_module(xb).reshape(-1), yb)
                loss.backward()
                opt.step()
    return t.seconds, t.cpu_seconds


def bench_overhead(images, device, quick):
    from skxray.models import CNNClassifier

    n, epochs = size("overhead", "n", quick), size("overhead", "epochs", quick)
    reps, px = size("overhead", "reps", quick), size("overhead", "image_size", quick)
    X, y = images.binary(n, px)
    y01 = (y == sorted(set(y))[1]).astype(np.int64)
    cuda = device == "cuda"

    def estimator():
        # float32, as the hand-written loops it is compared with.
        clf = CNNClassifier(max_epochs=epochs, batch_size=32, lr=1e-3, weight_decay=1e-4,
                            optimizer="adam", validation_fraction=None, ood=False, amp=False,
                            image_size=px, device=device, random_state=SEED)
        with Stopwatch(cuda) as t:
            clf.fit(X, y)
        return t.seconds, t.cpu_seconds

    variants = {
        "CNNClassifier.fit": estimator,
        "hand-written loop, DataLoader": lambda: manual_fit(
            X, y01, epochs=epochs, batch_size=32, device=device, mode="dataloader", image_size=px),
        "hand-written loop, index slicing": lambda: manual_fit(
            X, y01, epochs=epochs, batch_size=32, device=device, mode="slices", image_size=px),
    }
    # One untimed warm-up of each (first-call costs: allocator, kernels, imports).
    if not quick:
        for fn in variants.values():
            fn()
    cpu = {}
    timed = interleaved(variants, reps, cpu)
    rows = []
    ref, ref_cpu = timed["CNNClassifier.fit"][0], cpu["CNNClassifier.fit"]
    for name, (best, all_times) in timed.items():
        is_ref = name == "CNNClassifier.fit"
        rows.append({
            "benchmark": "overhead",
            "variant": name,
            "images_per_s": n * epochs / best,
            "images_per_cpu_s": n * epochs / cpu[name],
            "seconds_best": best,
            "cpu_seconds_best": cpu[name],
            "seconds_all": all_times,
            "n_images": n,
            "epochs": epochs,
            "image_size": px,
            "batch_size": 32,
            "ratio_estimator_vs_this": None if is_ref else best / ref,
            "ratio_estimator_vs_this_cpu_time": None if is_ref else cpu[name] / ref_cpu,
        })
    manual = rows[1:]
    worst = min(r["ratio_estimator_vs_this"] for r in manual)
    worst_cpu = min(r["ratio_estimator_vs_this_cpu_time"] for r in manual)
    # On a GPU the CPU time only measures the host side, so the wall time decides.
    decisive = worst_cpu if device == "cpu" else worst
    rows[0].update({"ratio": decisive, "ratio_wall_time": worst, "ratio_cpu_time": worst_cpu,
                    "target": ">= 0.95", "meets_target": decisive >= 0.95})
    log(f"overhead: estimator / fastest hand-written loop images/s = {worst:.3f} (wall time), "
        f"{worst_cpu:.3f} (CPU time)")
    return rows


# --------------------------------------------------------------------------
# the estimator against its own limit


def bf16_native(device):
    """Whether ``device`` runs bfloat16 autocast natively (what the estimators' amp=True needs)."""
    import torch

    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def limit_loop(Xt, yt, *, epochs, batch_size, device, image_size, autocast=None, compile_module=False):
    """The physical limit of this training: images already a tensor on ``device``, fancy-indexed batches."""
    import torch
    from torch import nn

    cuda = device == "cuda"
    with Stopwatch(cuda) as t:
        torch.manual_seed(SEED)
        module = conv_module(image_size).to(device)
        opt = torch.optim.Adam(module.parameters(), lr=1e-3, weight_decay=1e-4)
        loss_fn = nn.BCEWithLogitsLoss()
        gen = torch.Generator().manual_seed(SEED)
        module.train()
        step_module = torch.compile(module) if compile_module else module
        for _ in range(epochs):
            for i in torch.randperm(len(Xt), generator=gen).to(Xt.device).split(batch_size):
                opt.zero_grad(set_to_none=True)
                if autocast is None:
                    out = step_module(Xt[i])
                else:
                    with torch.autocast(torch.device(device).type, dtype=autocast):
                        out = step_module(Xt[i])
                loss = loss_fn(out.float().reshape(-1), yt[i])
                loss.backward()
                opt.step()
    return t.seconds, t.cpu_seconds


def _limit_variants(X, y, y01, *, epochs, px, device, amp):
    """``{name: callable}``: the estimator now, before (DataLoader), and the hand-written limit."""
    import torch

    from skxray.models import CNNClassifier

    cuda = device == "cuda"
    Xt = torch.from_numpy(np.ascontiguousarray(X[:, None], dtype=np.float32)).to(device)
    yt = torch.from_numpy(y01.astype(np.float32)).to(device)
    precision = "bfloat16" if amp else "float32"

    def estimator(dataloader):
        def run():
            # As before the batch iterator: every batch a DataLoader's. A
            # setting only a DataLoader takes makes the iterator one (the
            # training parameters' docs); timeout=0 is its default.
            before = {"iterator_train__timeout": 0} if dataloader else {}
            clf = CNNClassifier(max_epochs=epochs, batch_size=32, lr=1e-3, weight_decay=1e-4,
                                optimizer="adam", validation_fraction=None, ood=False, amp=amp,
                                image_size=px, device=device, random_state=SEED, **before)
            with Stopwatch(cuda) as t:
                clf.fit(X, y)
            return t.seconds, t.cpu_seconds
        return run

    autocast = torch.bfloat16 if amp else None
    return {
        f"CNNClassifier.fit, {precision}": estimator(False),
        f"CNNClassifier.fit, {precision}, DataLoader (before)": estimator(True),
        f"hand-written loop, {precision}, data in memory": lambda: limit_loop(
            Xt, yt, epochs=epochs, batch_size=32, device=device, image_size=px, autocast=autocast),
    }


def _median(values):
    return float(np.median(np.asarray(values, dtype=float)))


def _iteration_rows(X, reps, quick):
    """Host cost of the batches alone (no network): the DataLoader the estimator used vs BatchIterator."""
    import torch
    from torch.utils.data import DataLoader

    from skxray.models import CNNClassifier

    # The estimator's own dataset (get_dataset) and batch iterator (its skorch
    # net's iterator_train), from a throwaway fit on 4 images of this size.
    y = np.array(["a", "b"] * (len(X) // 2) + ["a"] * (len(X) % 2), dtype=object)
    probe = CNNClassifier(filters=(2,), dense_units=2, max_epochs=1, validation_fraction=None, ood=False,
                          device="cpu", random_state=SEED).fit(X[:4], y[:4])
    dataset = probe.get_dataset(X, y)
    BatchIterator = probe.net_.iterator_train

    def epoch(make):
        def run():
            with Stopwatch() as t:
                for _ in make(dataset, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(SEED)):
                    pass
            return t.seconds, t.cpu_seconds
        return run

    variants = {"batches only, DataLoader (before)": epoch(DataLoader),
                "batches only, BatchIterator": epoch(BatchIterator)}
    times = {name: [] for name in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            times[name].append(fn()[1])
    before = _median(times["batches only, DataLoader (before)"])
    return [{
        "benchmark": "limit", "variant": name, "images_per_cpu_s": len(X) / _median(ts),
        "cpu_seconds_median": _median(ts), "cpu_seconds_all": ts,
        "cpu_microseconds_per_image": 1e6 * _median(ts) / len(X),
        "speedup_vs_baseline": None if "before" in name else before / _median(ts),
        "speedup_all": None if "before" in name else [
            b / o for b, o in zip(times["batches only, DataLoader (before)"], ts, strict=True)],
        "n_images": len(X), "image_size": X.shape[-1], "batch_size": 32, "reps": reps,
        "notes": "one shuffled epoch of batches, no network; CPU time",
    } for name, ts in times.items()]


def against_limit(benchmark, variants, *, reps, images_per_run, device, common, target=0.98):
    """Rows of ``variants`` (name -> callable giving (wall, CPU) seconds) against the last one, the limit.

    One untimed warm-up run of each, then ``reps`` interleaved repetitions,
    the 1-minute load average recorded before each. A variant's ratio is the
    median over the repetitions of (limit time / its time), taken side by
    side: CPU time on a CPU device, wall time on a GPU.
    """
    for fn in variants.values():  # untimed warm-up: allocator, kernels, imports
        fn()
    times = {name: [] for name in variants}
    cpus = {name: [] for name in variants}
    loads = []
    for _ in range(reps):
        loads.append(round(os.getloadavg()[0], 2))
        for name, fn in variants.items():
            wall, cpu = fn()
            times[name].append(wall)
            cpus[name].append(cpu)
    limit_name = list(variants)[-1]
    rows = []
    for name in variants:
        paired = [lim / own for lim, own in zip(times[limit_name], times[name], strict=True)]
        paired_cpu = [lim / own for lim, own in zip(cpus[limit_name], cpus[name], strict=True)]
        row = {
            "benchmark": benchmark,
            "variant": name,
            "images_per_s": images_per_run / _median(times[name]),
            "images_per_cpu_s": images_per_run / _median(cpus[name]),
            "seconds_median": _median(times[name]),
            "cpu_seconds_median": _median(cpus[name]),
            "seconds_all": times[name],
            "cpu_seconds_all": cpus[name],
            "load_average_1min_per_rep": loads,
            **common,
        }
        if name != limit_name:
            ratio_wall, ratio_cpu = _median(paired), _median(paired_cpu)
            decisive = ratio_cpu if device == "cpu" else ratio_wall
            spread = paired_cpu if device == "cpu" else paired
            row.update({
                "ratio": decisive, "ratio_wall_time": ratio_wall, "ratio_cpu_time": ratio_cpu,
                "ratio_quartiles": [float(np.percentile(spread, 25)), float(np.percentile(spread, 75))],
                "ratio_wall_time_all": paired, "ratio_cpu_time_all": paired_cpu,
            })
            if target is not None:
                row.update({"target": f">= {target}", "meets_target": decisive >= target})
            log(f"{benchmark}: {name} / {limit_name} = {ratio_wall:.3f} (wall), {ratio_cpu:.3f} (CPU time)")
        rows.append(row)
    return rows


def bench_limit(images, device, quick):
    n, epochs = size("limit", "n", quick), size("limit", "epochs", quick)
    reps, px = size("limit", "reps", quick), size("limit", "image_size", quick)
    X, y = images.binary(n, px)
    y01 = (y == sorted(set(y))[1]).astype(np.int64)
    rows = []
    # bfloat16 autocast (amp=True) where it is native: a GPU with bfloat16, a
    # CPU with oneDNN's bfloat16 kernels (AVX-512 BF16 or AMX). The estimator
    # is given amp explicitly, so each row compares one precision with itself.
    amps = [False, True] if bf16_native(device) else [False]
    for amp in amps:
        variants = _limit_variants(X, y, y01, epochs=epochs, px=px, device=device, amp=amp)
        common = {"n_images": n, "epochs": epochs, "image_size": px, "batch_size": 32, "reps": reps,
                  "precision": "bfloat16" if amp else "float32"}
        rows += against_limit("limit", variants, reps=reps, images_per_run=n * epochs, device=device,
                              common=common)
    # Where the estimator's loader cost shows: the batches alone, at the
    # GPU benchmark's 256 px (on a CPU the network hides it).
    X256, _ = images.binary(n, size("cuda", "image_size", quick))
    return rows + _iteration_rows(X256, reps, quick)


# --------------------------------------------------------------------------
# torch.compile (compile=True) against the same limit


def _compile_variants(X, y, y01, *, epochs, px, device):
    """``{name: callable}``: the estimator uncompiled and compiled, the loop compiled, and the loop (the limit)."""
    import torch

    from skxray.models import CNNClassifier

    Xt = torch.from_numpy(np.ascontiguousarray(X[:, None], dtype=np.float32)).to(device)
    yt = torch.from_numpy(y01.astype(np.float32)).to(device)

    def estimator(compile_):
        def run():
            clf = CNNClassifier(max_epochs=epochs, batch_size=32, lr=1e-3, weight_decay=1e-4,
                                optimizer="adam", validation_fraction=None, ood=False, amp=False,
                                image_size=px, device=device, random_state=SEED, compile=compile_)
            with Stopwatch(device == "cuda") as t:
                clf.fit(X, y)
            return t.seconds, t.cpu_seconds
        return run

    def loop(compile_module):
        return lambda: limit_loop(Xt, yt, epochs=epochs, batch_size=32, device=device, image_size=px,
                                  compile_module=compile_module)

    return {
        "CNNClassifier.fit, compile=False": estimator(False),
        "CNNClassifier.fit, compile=True": estimator(True),
        "hand-written loop, torch.compile, data in memory": loop(True),
        "hand-written loop, float32, data in memory": loop(False),
    }


def bench_limit_compile(images, device, quick):
    import tempfile

    n, epochs = size("limit_compile", "n", quick), size("limit_compile", "epochs", quick)
    reps, px = size("limit_compile", "reps", quick), size("limit_compile", "image_size", quick)
    X, y = images.binary(n, px)
    y01 = (y == sorted(set(y))[1]).astype(np.int64)
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="skxray-inductor-") as cache:
        # An empty inductor cache: the first compiled fit pays the whole compilation.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        variants = _compile_variants(X, y, y01, epochs=epochs, px=px, device=device)
        first_eager = variants["CNNClassifier.fit, compile=False"]()
        first_compiled = variants["CNNClassifier.fit, compile=True"]()
        common = {"n_images": n, "epochs": epochs, "image_size": px, "batch_size": 32, "reps": reps,
                  "precision": "float32",
                  "first_fit_seconds_compile_false": first_eager[0],
                  "first_fit_seconds_compile_true": first_compiled[0],
                  "notes": "timed runs reuse the compiled code; the first compiled fit (empty inductor "
                           "cache) is in first_fit_seconds_compile_true, wall time"}
        rows = against_limit("limit_compile", variants, reps=reps, images_per_run=n * epochs,
                             device=device, common=common, target=None)
        if before is None:
            del os.environ["TORCHINDUCTOR_CACHE_DIR"]
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
    log(f"limit_compile: first fit {first_eager[0]:.1f} s uncompiled, {first_compiled[0]:.1f} s compiled")
    return rows


# --------------------------------------------------------------------------
# the frozen ResNet-50's feature extraction against its own limit

_IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def resnet_limit_loop(Xt, *, batch_size, device, channels_last):
    """The limit of feature extraction: images already one tensor on ``device``, sliced by batch.

    A ResNet-50 built as the estimator builds it (random weights, ``fc``
    removed, eval mode) and the estimator's input: gray images replicated to
    three channels and ImageNet-normalised; float32, ``torch.no_grad``.
    """
    import torch
    import torchvision
    from torch import nn

    layout = torch.channels_last if channels_last else torch.contiguous_format
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in _IMAGENET_NORM)
    with Stopwatch(device == "cuda") as t:
        torch.manual_seed(SEED)
        backbone = torchvision.models.resnet50(weights=None)
        backbone.fc = nn.Identity()
        backbone = backbone.to(device, memory_format=layout).eval()
        with torch.no_grad():
            features = torch.cat([
                backbone(((x.expand(-1, 3, -1, -1) - mean) / std).contiguous(memory_format=layout))
                for x in Xt.split(batch_size)
            ])
        assert features.shape == (len(Xt), 2048)
    return t.seconds, t.cpu_seconds


def _resnet_limit_variants(X, y, *, px, device, batch_size):
    """``{name: callable}``: the estimator's cached-feature fit now and before, and hand-written loops."""
    import torch

    from skxray.models import ResNet50Classifier

    Xt = torch.from_numpy(np.ascontiguousarray(X[:, None], dtype=np.float32)).to(device)

    def estimator(before):
        def run():
            # As before: a DataLoader (a setting only a DataLoader takes makes
            # the iterator one; timeout=0 is its default) and NCHW convolutions.
            extra = {"iterator_valid__timeout": 0, "module__channels_last": False} if before else {}
            clf = ResNet50Classifier(weights=None, max_epochs=1, batch_size=batch_size, validation_fraction=None,
                                     ood=False, amp=False, image_size=px, device=device, random_state=SEED,
                                     **extra)
            with Stopwatch(device == "cuda") as t:
                clf.fit(X, y)
            assert clf.features_cached_
            return t.seconds, t.cpu_seconds
        return run

    def loop(channels_last, batch=batch_size):
        return lambda: resnet_limit_loop(Xt, batch_size=batch, device=device, channels_last=channels_last)

    # Larger batches for the extraction alone, if they are faster (the
    # estimator's batch size is the head's training batch).
    large = 4 * batch_size
    return {
        "ResNet50Classifier.fit, cached features (BatchIterator, channels_last)": estimator(False),
        "ResNet50Classifier.fit, cached features, DataLoader + NCHW (before)": estimator(True),
        "hand-written loop, NCHW, data in memory": loop(False),
        f"hand-written loop, channels_last, batch {large}, data in memory": loop(True, large),
        "hand-written loop, channels_last, data in memory": loop(True),
    }


def bench_limit_resnet(images, device, quick):
    n, reps = size("limit_resnet", "n", quick), size("limit_resnet", "reps", quick)
    px, batch_size = int(size("limit_resnet", "image_size", quick)), 32
    X, y = images.binary(n, px)
    variants = _resnet_limit_variants(X, y, px=px, device=device, batch_size=batch_size)
    common = {"n_images": n, "image_size": px, "batch_size": batch_size, "reps": reps, "precision": "float32",
              "weights": "None (random init; the weights' values do not change the cost)",
              "notes": "estimator: fit = build the module, extract the features once, 1 epoch of the head on "
                       "them; loops: build the module, extract the features"}
    return against_limit("limit_resnet", variants, reps=reps, images_per_run=n, device=device, common=common,
                         target=None)


# --------------------------------------------------------------------------
# frozen ResNet-50 feature cache


def bench_resnet_cache(images, device, quick):
    from skxray.models import ResNet50Classifier

    n, epochs = size("resnet_cache", "n", quick), size("resnet_cache", "epochs", quick)
    px = size("resnet_cache", "image_size", quick)
    X, y = images.binary(n, px)
    cuda = device == "cuda"

    def fit(cache):
        def run():
            # One precision for both (amp="auto" would time each mode apart).
            clf = ResNet50Classifier(weights=None, freeze=True, cache_features=cache, amp=False,
                                     max_epochs=epochs, ood=False, image_size=px,
                                     device=device, random_state=SEED)
            with Stopwatch(cuda) as t:
                clf.fit(X, y)
            return t.seconds
        return run

    # cached, uncached, cached: the slow one once, the fast one around it.
    times = {"cache_features=True": [], "cache_features=False": []}
    for name in ("cache_features=True", "cache_features=False", "cache_features=True"):
        times[name].append(fit(name.endswith("True"))())
    cached, uncached = min(times["cache_features=True"]), min(times["cache_features=False"])
    speedup = uncached / cached
    log(f"resnet_cache: {speedup:.1f}x faster with cached features")
    common = {"benchmark": "resnet_cache", "n_images": n, "epochs": epochs, "image_size": px,
              "weights": "None (random init; weights do not change the cost)"}
    return [
        {**common, "variant": "cache_features=True", "seconds_best": cached,
         "seconds_all": times["cache_features=True"], "speedup": speedup,
         "target": ">= 8", "meets_target": speedup >= 8},
        {**common, "variant": "cache_features=False", "seconds_best": uncached,
         "seconds_all": times["cache_features=False"]},
    ]


def bench_resnet_store(images, device, quick):
    import shutil
    import tempfile

    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from skxray.models import ResNet50Classifier

    n, epochs = size("resnet_store", "n", quick), size("resnet_store", "epochs", quick)
    px, folds = size("resnet_store", "image_size", quick), size("resnet_store", "folds", quick)
    X, y = images.binary(n, px)
    cuda = device == "cuda"
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)

    def run(store):
        folder = tempfile.mkdtemp(prefix="skxray-speed-") if store else None
        clf = ResNet50Classifier(weights=None, max_epochs=epochs, ood=False, image_size=px,
                                 device=device, random_state=SEED, feature_cache_dir=folder)
        try:
            with Stopwatch(cuda) as t:
                scores = cross_val_score(clf, X, y, cv=cv)
        finally:
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        return t.seconds, float(np.mean(scores))

    names = ("feature_cache_dir=folder", "feature_cache_dir=None", "feature_cache_dir=folder")
    times, accuracy = {name: [] for name in names}, {}
    for name in names:
        seconds, accuracy[name] = run(name.endswith("folder"))
        times[name].append(seconds)
    stored, plain = min(times[names[0]]), min(times[names[1]])
    speedup = plain / stored
    log(f"resnet_store: {folds}-fold CV {speedup:.1f}x faster with feature_cache_dir")
    common = {"benchmark": "resnet_store", "n_images": n, "epochs": epochs, "image_size": px,
              "folds": folds, "weights": "None (random init; weights do not change the cost)"}
    return [
        {**common, "variant": names[0], "seconds_best": stored, "seconds_all": times[names[0]],
         "speedup": speedup, "mean_accuracy": accuracy[names[0]],
         "notes": f"same CV accuracy as without: {accuracy[names[0]] == accuracy[names[1]]}"},
        {**common, "variant": names[1], "seconds_best": plain, "seconds_all": times[names[1]],
         "mean_accuracy": accuracy[names[1]]},
    ]


# --------------------------------------------------------------------------
# loading


def bench_loading(images, device, quick):
    import torch

    from skxray.preprocessing import ImageLoader

    if images.paths is None:
        return [{"benchmark": "loading", "variant": "skipped (phantom images have no files)"}]
    n, reps = size("loading", "n", quick), size("loading", "reps", quick)
    paths = list(images.paths[images.order[:n]])
    ImageLoader(image_size=128, n_jobs=2).fit_transform(paths)  # warm the page cache

    def load(n_jobs):
        def run():
            with Stopwatch() as t:
                ImageLoader(image_size=128, n_jobs=n_jobs).fit_transform(paths)
            return t.seconds
        return run

    timed = interleaved({"n_jobs=1": load(1), "n_jobs=2": load(2)}, reps)
    speedup = timed["n_jobs=1"][0] / timed["n_jobs=2"][0]
    log(f"loading: n_jobs=2 is {speedup:.2f}x n_jobs=1")
    rows = []
    for name, (best, all_times) in timed.items():
        rows.append({"benchmark": "loading", "variant": f"ImageLoader(128 px, {name})",
                     "images_per_s": n / best, "seconds_best": best, "seconds_all": all_times,
                     "n_images": n, "image_size": 128, "threads": torch.get_num_threads(),
                     "notes": "the resize inside runs on torch's intra-op threads"})
    rows[1]["speedup"] = speedup
    return rows


# --------------------------------------------------------------------------
# streaming vs in memory (child processes)


def _child_command(args_list, threads):
    return [sys.executable, str(Path(__file__).resolve()), "--child", *args_list,
            "--threads", str(threads)]


def run_child(args_list, threads, env=None):
    proc = subprocess.run(_child_command(args_list, threads), capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args_list} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(argv):
    """``--child stream|memory|train`` modes; prints one JSON line."""
    p = argparse.ArgumentParser()
    p.add_argument("--child")
    p.add_argument("--n", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", default="1")
    p.add_argument("--phantom", action="store_true")
    args = p.parse_args(argv)
    configure_threads(args.threads)
    import torch

    images = Images(args.phantom)
    out = {"rss_after_imports_mib": _rss_mib("VmRSS")}
    if args.child in ("stream", "memory"):
        from skxray.models import CNNClassifier
        from skxray.preprocessing import ImageLoader

        idx = [i for i in images.order if images.y[i] in CLASSES_BINARY][: args.n]
        y = images.y[idx]
        # Each variant runs in a child process of its own: one fixed precision
        # (amp="auto" would measure, and might decide, in each child apart).
        clf = CNNClassifier(max_epochs=args.epochs, image_size=args.image_size, ood=False, amp=False,
                            validation_fraction=None, device=args.device, random_state=SEED)
        with Stopwatch(args.device == "cuda") as t_load:
            if args.child == "stream":
                X = np.asarray(images.paths[idx], dtype=object)
            else:
                X = ImageLoader(image_size=args.image_size, n_jobs=1).fit_transform(
                    list(images.paths[idx]))
        with Stopwatch(args.device == "cuda") as t_fit:
            clf.fit(X, y)
        out.update(load_s=t_load.seconds, fit_s=t_fit.seconds)
    elif args.child == "segment":
        from skxray.segmentation import load_lung_segmenter, segment_lungs

        X, _ = images.binary(args.n, args.image_size)
        load_lung_segmenter()
        segment_lungs(X[:8])  # warm-up
        for clean in (True, False):
            best = best_cpu = float("inf")
            for _ in range(args.epochs):  # repetitions
                with Stopwatch() as t:
                    segment_lungs(X, clean=clean)
                best, best_cpu = min(best, t.seconds), min(best_cpu, t.cpu_seconds)
            out[f"seconds_clean_{clean}"], out[f"cpu_seconds_clean_{clean}"] = best, best_cpu
        out["threads"] = torch.get_num_threads()
    elif args.child == "train":
        X, y = images.binary(args.n, args.image_size)
        y01 = (y == sorted(set(y))[1]).astype(np.int64)
        out["fit_s"], out["fit_cpu_s"] = manual_fit(
            X, y01, epochs=args.epochs, batch_size=32, device=args.device, mode="slices",
            image_size=args.image_size)
        out["threads"] = torch.get_num_threads()
    out["peak_rss_mib"] = _rss_mib("VmHWM")
    print(json.dumps(out))


def _rss_mib(field):
    """VmRSS (now) or VmHWM (peak) of this process, in MiB.

    Not ``ru_maxrss``: on Linux it survives ``exec``, so a child started by a
    big parent reports the parent's peak. VmHWM belongs to the new address
    space. Falls back to ``ru_maxrss`` where /proc is absent.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_streaming(images, device, quick, threads):
    if images.paths is None:
        return [{"benchmark": "streaming", "variant": "skipped (phantom images have no files)"}]
    n, epochs = size("streaming", "n", quick), size("streaming", "epochs", quick)
    px = size("streaming", "image_size", quick)
    common = ["--n", str(n), "--image-size", str(px), "--epochs", str(epochs), "--device", device]
    res = {}
    for mode in ("memory", "stream"):
        res[mode] = run_child([mode, *common], threads)
    rows = []
    for mode, label in (("stream", "paths streamed during training"),
                        ("memory", "arrays in memory (ImageLoader first)")):
        r = res[mode]
        rows.append({
            "benchmark": "streaming",
            "variant": label,
            "images_per_s": n * epochs / r["fit_s"],
            "images_per_s_with_loading": n * epochs / (r["fit_s"] + r["load_s"]),
            "seconds_fit": r["fit_s"],
            "seconds_load": r["load_s"],
            "peak_rss_mib": r["peak_rss_mib"],
            "rss_after_imports_mib": r["rss_after_imports_mib"],
            "n_images": n,
            "epochs": epochs,
            "image_size": px,
        })
    rows[0]["ratio_vs_memory"] = rows[0]["images_per_s"] / rows[1]["images_per_s"]
    rows[0]["peak_rss_ratio_vs_memory"] = rows[0]["peak_rss_mib"] / rows[1]["peak_rss_mib"]
    log(f"streaming: paths {rows[0]['images_per_s']:.1f} img/s vs memory "
        f"{rows[1]['images_per_s']:.1f} img/s; peak RSS {rows[0]['peak_rss_mib']:.0f} vs "
        f"{rows[1]['peak_rss_mib']:.0f} MiB")
    return rows


# --------------------------------------------------------------------------
# lung segmenter


def bench_segmenter(images, device, quick, threads):
    n, px = size("segmenter", "n", quick), size("segmenter", "image_size", quick)
    reps = size("segmenter", "reps", quick)
    r = run_child(["segment", "--n", str(n), "--image-size", str(px), "--epochs", str(reps),
                   *(["--phantom"] if images.phantom else [])], threads)
    rows = []
    for clean, label in ((True, "segment_lungs (default: two largest parts kept)"),
                         (False, "segment_lungs(clean=False)")):
        rows.append({
            "benchmark": "segmenter",
            "variant": label,
            "images_per_s": n / r[f"seconds_clean_{clean}"],
            "images_per_cpu_s": n / r[f"cpu_seconds_clean_{clean}"],
            "seconds_best": r[f"seconds_clean_{clean}"],
            "peak_rss_mib": r["peak_rss_mib"],
            "rss_after_imports_mib": r["rss_after_imports_mib"],
            "n_images": n,
            "image_size": px,
            "threads": r["threads"],
            "target": ">= 200 images/s" if clean else None,
            "meets_target": (n / r[f"seconds_clean_{clean}"] >= 200) if clean else None,
            "notes": "peak RSS of the child process (data, network and masks)",
        })
    log(f"segmenter: {rows[0]['images_per_s']:.0f} img/s ({rows[1]['images_per_s']:.0f} without "
        f"clean-up), peak RSS {r['peak_rss_mib']:.0f} MiB")
    return rows


# --------------------------------------------------------------------------
# inference


def bench_inference(images, device, quick):
    from accuracy import MODEL_SETTINGS

    from skxray.models import CNNClassifier, FNNClassifier, ResNet50Classifier

    n, n_resnet = size("inference", "n", quick), size("inference", "n_resnet", quick)
    reps = size("inference", "reps", quick)
    classes = {"cnn": CNNClassifier, "fnn": FNNClassifier, "resnet50": ResNet50Classifier}
    cuda = device == "cuda"
    fitted, data, sizes = {}, {}, {}
    for model, cls in classes.items():
        px = 32 if quick else MODEL_SETTINGS[model]["image_size"]
        kwargs = {"weights": None} if model == "resnet50" else {}
        X_train, y_train = images.binary(64, px)
        fitted[model] = cls(max_epochs=1, ood=False, image_size=px, device=device,
                            random_state=SEED, **kwargs).fit(X_train, y_train)
        data[model] = images.binary(n_resnet if model == "resnet50" else n, px)[0]
        sizes[model] = px
        fitted[model].predict_proba(data[model][:8])  # warm-up

    def predict(model):
        def run():
            with Stopwatch(cuda) as t:
                fitted[model].predict_proba(data[model])
            return t.seconds
        return run

    timed = interleaved({m: predict(m) for m in classes}, reps)
    rows = []
    for model, (best, all_times) in timed.items():
        rows.append({"benchmark": "inference", "variant": f"{model}.predict_proba",
                     "images_per_s": len(data[model]) / best, "seconds_best": best,
                     "seconds_all": all_times, "n_images": len(data[model]),
                     "image_size": sizes[model], "batch_size": 32})
    per_image = sum(1 / r["images_per_s"] for r in rows)
    rows.append({"benchmark": "inference", "variant": "voting (cnn + fnn + resnet50)",
                 "images_per_s": 1 / per_image,
                 "notes": "sum of the members' per-image times (each at its own size)"})
    log("inference: " + ", ".join(f"{r['variant']} {r['images_per_s']:.1f} img/s" for r in rows))
    return rows


# --------------------------------------------------------------------------
# roofline


def matmul_gflops(device, threads=None, reps=5, dtype=None):
    """Best matmul GFLOP/s (CPU: 1024 and 2048; GPU: 8192): (wall, CPU time).

    float32 unless ``dtype`` (a torch dtype) says otherwise. The CPU-time
    figure divides by the process's CPU seconds, i.e. the rate while it
    actually ran; on a CPU shared with other jobs it is the stable one.
    """
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    cuda = device == "cuda"
    best_wall = best_cpu = 0.0
    for side in (8192,) if cuda else (1024, 2048):
        a = torch.randn(side, side, device=device, dtype=dtype)
        b = torch.randn(side, side, device=device, dtype=dtype)
        a @ b  # warm-up
        for _ in range(reps):
            with Stopwatch(cuda) as t:
                a @ b
            best_wall = max(best_wall, 2 * side**3 / t.seconds / 1e9)
            if t.cpu_seconds > 0:
                best_cpu = max(best_cpu, 2 * side**3 / t.cpu_seconds / 1e9)
    return best_wall, best_cpu


def training_flops_per_image(image_size, batch_size=32):
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    module = conv_module(image_size)
    module.train()
    x = torch.rand(batch_size, 1, image_size, image_size)
    y = torch.rand(batch_size)
    with FlopCounterMode(display=False) as counter:
        loss = nn.BCEWithLogitsLoss()(module(x).reshape(-1), y)
        loss.backward()
    return counter.get_total_flops() / batch_size


def _roofline_variants(X, y01, epochs, device, px, quick):
    """The in-process training variants to time, and a note on torch.compile."""

    def loop(**kw):
        # Variants are measured against NCHW at batch 32 (the module's layout before
        # channels_last became the CNN's default, because of this measurement).
        return lambda: manual_fit(X, y01, epochs=epochs, device=device, mode="slices",
                                  image_size=px, **{"batch_size": 32, "channels_last": False, **kw})

    variants = {
        "baseline (batch 32)": loop(),
        "channels_last": loop(channels_last=True),
        "batch 128": loop(batch_size=128),
    }
    if quick:
        return variants, None
    variants["batch 64"] = loop(batch_size=64)
    variants["channels_last + batch 128"] = loop(channels_last=True, batch_size=128)
    try:
        with Stopwatch() as t_compile:
            manual_fit(X[:64], y01[:64], epochs=1, batch_size=32, device=device,
                       mode="slices", image_size=px, compile_module=True, channels_last=False)
        compile_note = f"first compiled epoch (64 images) took {t_compile.seconds:.1f} s"
        variants["torch.compile"] = loop(compile_module=True)
    except Exception as exc:  # noqa: BLE001 - report, do not fail the benchmark
        compile_note = f"torch.compile failed: {type(exc).__name__}: {str(exc)[:200]}"
        log(compile_note)
    return variants, compile_note


def _roofline_thread_rows(images, n, px, epochs, device, reps, threads, row):
    """Rows of the thread settings, each timed in fresh child processes."""
    import torch

    n_cores = os.cpu_count() or 1
    rows = []
    # Thread settings need fresh processes (OpenMP reads its settings at start-up).
    common = ["train", "--n", str(n), "--image-size", str(px), "--epochs", str(epochs),
              "--device", device] + (["--phantom"] if images.phantom else [])
    child_variants = {
        "1 thread": ({"OMP_WAIT_POLICY": "ACTIVE"}, 1),
        f"{n_cores} threads, OMP_WAIT_POLICY=ACTIVE": ({"OMP_WAIT_POLICY": "ACTIVE"}, n_cores),
        f"{n_cores} threads, OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, n_cores),
    }
    child = {name: [] for name in child_variants}
    for _ in range(reps):
        for name, (env, n_threads) in child_variants.items():
            child[name].append(run_child(common, n_threads, env))
    peaks = {}
    for t in (1, n_cores):
        a, b = matmul_gflops(device, threads=t), matmul_gflops(device, threads=t)
        peaks[t] = (max(a[0], b[0]), max(a[1], b[1]))
    torch.set_num_threads(threads)
    for name, runs in child.items():
        n_threads = child_variants[name][1]
        walls = [r["fit_s"] for r in runs]
        rows.append(row(
            f"threads: {name}", n_threads, min(walls), min(r["fit_cpu_s"] for r in runs),
            walls, peaks[n_threads],
            notes="child process; matmul peak measured with the same thread count",
        ))
    return rows


def bench_roofline(images, device, quick, threads):
    import torch

    n, epochs = size("roofline", "n", quick), size("roofline", "epochs", quick)
    reps, px = size("roofline", "reps", quick), size("roofline", "image_size", quick)
    X, y = images.binary(n, px)
    y01 = (y == sorted(set(y))[1]).astype(np.int64)
    flops = training_flops_per_image(px)
    cpu = device == "cpu"
    n_cores = os.cpu_count() or 1

    variants, compile_note = _roofline_variants(X, y01, epochs, device, px, quick)
    peak_before = matmul_gflops(device)
    cpu_times = {}
    timed = interleaved(variants, reps, cpu_times)
    # The machine's peak: the best of measurements before and after the runs.
    peak_after = matmul_gflops(device)
    peak = max(peak_before[0], peak_after[0])
    peak_cpu = max(peak_before[1], peak_after[1])
    gflop = flops / 1e9

    def row(name, n_threads, wall, cpu_s, all_times, peaks, **extra):
        ips = n * epochs / wall
        out = {
            "benchmark": "roofline", "variant": name, "threads": n_threads,
            "images_per_s": ips, "gflop_per_image": gflop, "achieved_gflops": ips * gflop,
            "matmul_gflops": peaks[0], "fraction_of_matmul": ips * gflop / peaks[0],
            "speedup_vs_baseline": base / wall, "seconds_all": all_times,
            "n_images": n, "epochs": epochs, "image_size": px,
        }
        if cpu_s and peaks[1]:
            out.update({
                "achieved_gflops_cpu_time": n * epochs * gflop / cpu_s,
                "matmul_gflops_cpu_time": peaks[1],
                "fraction_of_matmul_cpu_time": n * epochs * gflop / cpu_s / peaks[1],
            })
        out.update(extra)
        return out

    rows = []
    base = timed["baseline (batch 32)"][0]
    for name, (best, all_times) in timed.items():
        rows.append(row(name, torch.get_num_threads(), best, cpu_times.get(name), all_times,
                        (peak, peak_cpu)))
        if name == "torch.compile":
            rows[-1]["notes"] = (compile_note + "; compile time excluded: the timed runs reuse "
                                 "the compiled code")
    if compile_note and "torch.compile" not in variants:
        rows.append({"benchmark": "roofline", "variant": "torch.compile", "notes": compile_note})
    if cpu and n_cores > 1:
        rows += _roofline_thread_rows(images, n, px, epochs, device, reps, threads, row)
    best = max((r for r in rows if r.get("images_per_s")), key=lambda r: r["images_per_s"])
    for r in rows:
        r["fastest"] = r is best
    log(f"roofline: matmul {peak:.1f} GFLOP/s ({peak_cpu:.1f} per CPU second); baseline "
        f"{rows[0]['achieved_gflops']:.2f} GFLOP/s ({rows[0]['fraction_of_matmul']:.1%}); "
        f"fastest: {best['variant']} ({best['fraction_of_matmul']:.1%})")
    return rows


# --------------------------------------------------------------------------
# profile

#: The op groups of the ``profile`` section, each with the fragments (lower
#: case) of the profiler event names it takes; the first group that matches
#: wins. An event that no group names (allocation, views, autograd's own
#: bookkeeping, Adam's element-wise ops) counts in its nearest named
#: ancestor's group (Adam's ops: "optimizer step"), "other" at the top.
#: ``MulBackward0`` is dropout's backward: the CNN has no other product.
PROFILE_GROUPS = (
    ("optimizer step", ("optimizer.step", "optimizer.zero_grad")),
    ("loss", ("binary_cross_entropy", "binarycrossentropy")),
    ("convolution backward", ("convolution_backward", "convolutionbackward")),
    ("convolution forward", ("conv2d", "convolution")),
    ("batch norm", ("batch_norm", "batchnorm")),
    ("activation and dropout", ("relu", "threshold_backward", "dropout", "mulbackward")),
    ("pooling", ("max_pool", "maxpool", "avg_pool", "avgpool")),
    ("linear", ("aten::linear", "addmm", "aten::mm", "mmbackward")),
    ("copies and casts", ("aten::copy_", "aten::to", "aten::_to_copy", "aten::contiguous", "aten::clone",
                          "tocopybackward", "clonebackward")),
)
PROFILE_OTHER = "other"


def op_group(name):
    """The group of :data:`PROFILE_GROUPS` that names the event ``name``, or None."""
    lower = name.lower()
    return next((group for group, fragments in PROFILE_GROUPS if any(f in lower for f in fragments)), None)


def event_group(event):
    """The group of ``event`` (a profiler event with ``name`` and ``cpu_parent``): its own, or its
    nearest named ancestor's, or :data:`PROFILE_OTHER`."""
    while event is not None:
        group = op_group(event.name)
        if group is not None:
            return group
        event = event.cpu_parent
    return PROFILE_OTHER


def group_seconds(events):
    """Seconds of each group: the events' self time (exclusive of their children), so each
    microsecond counts once."""
    out = dict.fromkeys([g for g, _ in PROFILE_GROUPS] + [PROFILE_OTHER], 0.0)
    for e in events:
        out[event_group(e)] += e.self_cpu_time_total / 1e6
    return out


def time_shares(seconds):
    """Each group's share of the total of ``seconds`` (group -> seconds); the shares sum to 1."""
    total = sum(seconds.values())
    return {g: s / total for g, s in seconds.items()}


def _conv_pass_gflop(layer):
    """GFLOP of one pass (forward, or one of the two gradients) of a convolution layer."""
    n, c_out, h, w = layer["output_shape"]
    _, c_in, kh, kw = layer["weight_shape"]
    return 2 * n * c_out * h * w * c_in * kh * kw / 1e9  # c_in is per group: the weight's dim 1


def conv_layers(events):
    """The convolutions of profiled ``events``, in forward order: shapes, arguments, the gradients
    training computes, and the profiled seconds of their forward and backward passes."""
    layers = {}
    for e in events:
        if e.name == "aten::convolution":
            layer = layers.setdefault(tuple(e.input_shapes[1]), {"forward_s": 0.0, "backward_s": 0.0})
            layer["forward_s"] += e.cpu_time_total / 1e6
            layer["input_shape"] = list(e.input_shapes[0])
        elif e.name == "aten::convolution_backward":
            args = e.concrete_inputs
            layer = layers.setdefault(tuple(e.input_shapes[2]), {"forward_s": 0.0, "backward_s": 0.0})
            layer["backward_s"] += e.cpu_time_total / 1e6
            layer["backward_calls"] = layer.get("backward_calls", 0) + 1
            layer.update(output_shape=list(e.input_shapes[0]), stride=list(args[4]), padding=list(args[5]),
                         dilation=list(args[6]), groups=int(args[9]),
                         computes_input_grad=bool(args[10][0]), computes_weight_grad=bool(args[10][1]))
    out = []
    for i, (weight, layer) in enumerate(layers.items(), 1):
        layer.update(layer=f"conv{i}", weight_shape=list(weight))
        out.append(layer)
    return out


def profile_gflop(events, layers, steps):
    """GFLOP per step from the profile: the convolutions from their recorded shapes and the
    gradients autograd asked for (the profiler counts none of them: ``padding="same"``), and the
    matrix products as the profiler counts them (``with_flops``); also the profiler's own total."""
    conv = sum(_conv_pass_gflop(L) * (1 + L["computes_input_grad"] + L["computes_weight_grad"])
               * L["backward_calls"] for L in layers)
    mm = sum(e.flops for e in events if e.name in ("aten::mm", "aten::addmm")) / 1e9
    with_flops = sum(e.flops for e in events) / 1e9
    return (conv + mm) / steps, with_flops / steps


def _profile_train_steps(module, opt, batches, autocast):
    """Training steps as the estimator takes them: the forward pass under autocast (or not), its
    output back to float32, the loss in float32 (``TrainingNet.infer`` and ``get_loss``)."""
    import torch
    from torch import nn

    loss_fn = nn.BCEWithLogitsLoss()
    for xb, yb in batches:
        opt.zero_grad(set_to_none=True)
        if autocast is None:
            out = module(xb)
        else:
            with torch.autocast("cpu", dtype=autocast):
                out = module(xb)
            out = out.float()
        loss_fn(out.reshape(-1), yb).backward()
        opt.step()


def _captured_conv_tensors(module, opt, batch, autocast):
    """Each convolution's input, weight and output gradient in one training step, as they are
    (dtype, strides: NHWC with one channel is ambiguous, and oneDNN's speed depends on it)."""
    from torch import nn

    captured, handles = {}, []

    def keep(conv, inputs, output):
        entry = captured.setdefault(tuple(conv.weight.shape), {})
        entry.update(x=inputs[0].detach(), w=conv.weight.detach())
        output.register_hook(lambda grad: entry.__setitem__("g", grad.detach()))

    for conv in (m for m in module.modules() if isinstance(m, nn.Conv2d)):
        handles.append(conv.register_forward_hook(keep))
    try:
        _profile_train_steps(module, opt, [batch], autocast)
    finally:
        for h in handles:
            h.remove()
    return captured


def _conv_microbench(tensors, layer, dtype, reps):
    """CPU seconds (median of ``reps``) of a layer's forward pass and of each gradient alone
    (``aten::convolution_backward`` asked for one output), on its training tensors in ``dtype``."""
    import torch

    x, w, g = (tensors[k].to(dtype) for k in ("x", "w", "g"))  # .to keeps the strides
    args = (layer["stride"], layer["padding"], layer["dilation"], False, [0, 0], layer["groups"])
    calls = {
        "forward": lambda: torch.ops.aten.convolution(x, w, None, *args),
        "backward_input": lambda: torch.ops.aten.convolution_backward(g, x, w, None, *args, [True, False, False]),
        "backward_weight": lambda: torch.ops.aten.convolution_backward(g, x, w, None, *args, [False, True, False]),
    }
    inner = {}
    for name, fn in calls.items():
        fn()  # warm-up: oneDNN builds its kernels on the first call
        with Stopwatch() as t:
            fn()
        inner[name] = max(1, int(0.02 / max(t.seconds, 1e-4)))  # calls per timing: >= ~20 ms
    times = {name: [] for name in calls}
    for _ in range(reps):
        for name, fn in calls.items():
            with Stopwatch() as t:
                for _ in range(inner[name]):
                    fn()
            times[name].append(t.cpu_seconds / inner[name])
    return {name: _median(ts) for name, ts in times.items()}


def _conv_layer_rows(layers, captured, dtype, reps, peak):
    """Per layer: the shapes, and the achieved GFLOP/s of each pass against the matmul rate."""
    rows = []
    for layer in layers:
        gflop = _conv_pass_gflop(layer)
        seconds = _conv_microbench(captured[tuple(layer["weight_shape"])], layer, dtype, reps)
        row = {"layer": layer["layer"], "input_shape": layer["input_shape"], "weight_shape": layer["weight_shape"],
               "output_shape": layer["output_shape"], "gflop_per_pass": gflop,
               "training_computes_input_grad": layer["computes_input_grad"],
               "profiled_forward_s_per_step": layer["forward_s"] / layer["backward_calls"],
               "profiled_backward_s_per_step": layer["backward_s"] / layer["backward_calls"]}
        for name, s in seconds.items():
            row[f"{name}_cpu_s"] = s
            row[f"{name}_gflops"] = gflop / s
            row[f"{name}_fraction_of_matmul"] = gflop / s / peak
        rows.append(row)
    return rows


def _profile_configs(images, quick, steps, bf16):
    """The (image size, precision) configurations, each with its module, optimizer and batches."""
    import torch

    configs = {}
    for px in (size("profile", "image_size", quick), size("profile", "image_size_large", quick)):
        X, y = images.binary(32 * steps, px)
        y01 = torch.from_numpy((y == sorted(set(y))[1]).astype(np.float32))
        Xt = torch.from_numpy(np.ascontiguousarray(X[:, None], dtype=np.float32))
        batches = list(zip(Xt.split(32), y01.split(32), strict=True))
        for precision, autocast in (("float32", None), ("bfloat16 autocast", torch.bfloat16)):
            if autocast is not None and not bf16:
                continue
            torch.manual_seed(SEED)
            module = conv_module(px)  # the estimator's module, NHWC as it trains it
            module.train()
            opt = torch.optim.Adam(module.parameters(), lr=1e-3, weight_decay=1e-4)
            _profile_train_steps(module, opt, batches[:1], autocast)  # warm-up
            configs[f"{px} px, {precision}"] = {"px": px, "precision": precision, "autocast": autocast,
                                               "module": module, "opt": opt, "batches": batches}
    return configs


def _profile_runs(configs, reps):
    """Interleaved repetitions of each configuration: timed steps (CPU seconds per step), then the
    same steps under ``torch.profiler``; the load average before each repetition."""
    from torch.profiler import ProfilerActivity, profile

    runs = {name: {"step_cpu_s": [], "shares": [], "seconds": [], "profiled_fraction": []} for name in configs}
    loads = []
    for _ in range(reps):
        loads.append(round(os.getloadavg()[0], 2))
        for name, c in configs.items():
            args = (c["module"], c["opt"], c["batches"], c["autocast"])
            with Stopwatch() as t:
                _profile_train_steps(*args)
            runs[name]["step_cpu_s"].append(t.cpu_seconds / len(c["batches"]))
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
                with Stopwatch() as t_prof:
                    _profile_train_steps(*args)
            events = list(prof.events())
            seconds = group_seconds(events)
            runs[name]["seconds"].append(seconds)
            runs[name]["shares"].append(time_shares(seconds))
            runs[name]["profiled_fraction"].append(sum(seconds.values()) / t_prof.seconds)
            runs[name]["events"] = events  # the last repetition's, for the shapes and FLOPs
    return runs, loads


def bench_profile(images, device, quick):
    """Where a training step's CPU time goes, per op group, and how fast each convolution runs."""
    import torch

    if device != "cpu":
        log("profile: CPU only (the GPU's profile needs CUDA activities); skipped")
        return []
    steps, reps = size("profile", "steps", quick), size("profile", "reps", quick)
    micro_reps = size("profile", "micro_reps", quick)
    threads_before = torch.get_num_threads()
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    try:
        # One thread: the profiler's op times are then this thread's CPU time, and the matmul
        # rate per CPU second is stable on a shared CPU (the roofline's 1-thread row).
        bf16_rate = lambda: matmul_gflops(device, threads=1, dtype=torch.bfloat16)[1]  # noqa: E731
        peaks = [matmul_gflops(device, threads=1)[1], bf16_rate() if bf16 else None]
        configs = _profile_configs(images, quick, steps, bf16)
        runs, loads = _profile_runs(configs, reps)
        # The rates: the best of measurements before and after the runs, as in ``roofline``.
        peak32 = max(peaks[0], matmul_gflops(device, threads=1)[1])
        peak16 = max(peaks[1], bf16_rate()) if bf16 else None
        rows = []
        for name, c in configs.items():
            run = runs[name]
            step_s = _median(run["step_cpu_s"])
            gflop = training_flops_per_image(c["px"]) * 32 / 1e9
            layers = conv_layers(run["events"])
            captured = _captured_conv_tensors(c["module"], c["opt"], c["batches"][0], c["autocast"])
            from_shapes, with_flops = profile_gflop(run["events"], layers, steps)
            dtype = c["autocast"] or torch.float32
            peak = peak32 if c["autocast"] is None else peak16
            medians = {g: _median([s[g] for s in run["seconds"]]) for g in run["seconds"][0]}
            row = {
                "benchmark": "profile", "variant": name, "precision": c["precision"], "image_size": c["px"],
                "batch_size": 32, "threads": 1, "steps": steps, "reps": reps,
                "step_cpu_seconds_median": step_s, "step_cpu_seconds_all": run["step_cpu_s"],
                "images_per_cpu_s": 32 / step_s, "gflop_per_step": gflop,
                "achieved_gflops_cpu_time": gflop / step_s, "matmul_gflops_cpu_time": peak32,
                "fraction_of_matmul_cpu_time": gflop / step_s / peak32,
                "time_share": time_shares(medians), "time_share_all": run["shares"],
                "profiled_op_time_of_step": _median(run["profiled_fraction"]),
                "gflop_per_step_from_profile": from_shapes,
                "flops_ratio_estimator_vs_profile": gflop / from_shapes,
                "gflop_per_step_profiler_with_flops": with_flops,
                "conv_layers": _conv_layer_rows(layers, captured, dtype, micro_reps, peak),
                "conv_layers_matmul_rate": "bfloat16" if c["autocast"] is not None else "float32",
                "load_average_1min_per_rep": loads,
            }
            best_pass = max(L[f"{p}_gflops"] for L in row["conv_layers"] for p in ("forward", "backward_weight"))
            row.update(best_conv_pass_gflops=best_pass, fraction_of_best_conv_pass=gflop / step_s / best_pass)
            if c["autocast"] is not None:
                base = runs[name.replace("bfloat16 autocast", "float32")]["step_cpu_s"]
                row.update({
                    "matmul_gflops_bf16_cpu_time": peak16, "fraction_of_bf16_matmul_cpu_time": gflop / step_s / peak16,
                    "speedup_vs_float32": _median([b / s for b, s in zip(base, run["step_cpu_s"], strict=True)]),
                })
            rows.append(row)
            log(f"profile: {name}: {row['fraction_of_matmul_cpu_time']:.1%} of the float32 matmul rate; shares "
                + ", ".join(f"{g} {v:.0%}" for g, v in row["time_share"].items()))
    finally:
        torch.set_num_threads(threads_before)
    return rows


# --------------------------------------------------------------------------
# cuda

#: The variants of the ``cuda`` section: (name, input, estimator parameters).
CUDA_VARIANTS = (
    ("float32, batch 32", "arrays", {"amp": False, "batch_size": 32}),
    ("bfloat16 autocast, batch 32", "arrays", {"amp": True, "batch_size": 32}),
    ("float32, batch 128", "arrays", {"amp": False, "batch_size": 128}),
    ("bfloat16 autocast, batch 128", "arrays", {"amp": True, "batch_size": 128}),
    ("bfloat16 autocast, batch 256", "arrays", {"amp": True, "batch_size": 256}),
    ("paths, 0 workers (bf16, batch 128)", "paths", {"amp": True, "batch_size": 128, "num_workers": 0}),
    ("paths, 4 workers (bf16, batch 128)", "paths", {"amp": True, "batch_size": 128, "num_workers": 4}),
    ("paths, 8 workers (bf16, batch 128)", "paths", {"amp": True, "batch_size": 128, "num_workers": 8}),
)


def bench_cuda(images, device, quick):
    """``CNNClassifier.fit`` on CUDA: autocast and batch size on arrays, workers on paths."""
    if device != "cuda" or images.paths is None:
        why = "needs a CUDA device" if device != "cuda" else "phantom images have no files"
        return [{"benchmark": "cuda", "variant": f"skipped ({why})"}]
    return [*_cuda_rows(images, device, quick, CUDA_VARIANTS),
            *_cuda_resnet_rows(images, device, quick, {"float32": False, "bfloat16 autocast": True})]


def _cuda_resnet_rows(images, device, quick, amps):
    """``predict_proba`` of a frozen ResNet-50 with each ``amp`` of ``amps`` (name -> amp)."""
    from skxray.models import ResNet50Classifier

    n, reps, px = size("cuda", "n", quick), size("cuda", "reps", quick), size("cuda", "resnet_image_size", quick)
    X, y = images.binary(n, px)
    models = {
        name: ResNet50Classifier(weights=None, max_epochs=1, image_size=px, ood=False,
                                 validation_fraction=None, device=device, amp=amp,
                                 random_state=SEED).fit(X, y)
        for name, amp in amps.items()
    }

    def predict(model):
        def run():
            with Stopwatch(device == "cuda") as t:
                model.predict_proba(X)
            return t.seconds
        return run

    timed = interleaved({name: predict(m) for name, m in models.items()}, reps)
    base = timed[next(iter(amps))][0]
    rows = [{
        "benchmark": "cuda", "variant": f"ResNet-50 predict_proba, {name}", "input": "arrays",
        "amp": amps[name], "batch_size": models[name].batch_size,
        "images_per_s": n / best, "speedup": base / best, "seconds_best": best,
        "seconds_all": all_times, "n_images": n, "image_size": px,
    } for name, (best, all_times) in timed.items()]
    log("cuda: " + "; ".join(f"{r['variant']} {r['images_per_s']:.0f} img/s" for r in rows))
    return rows


def _cuda_rows(images, device, quick, variants_spec):
    """The rows of the ``cuda`` section (``device`` is a parameter for tests)."""
    from skxray.models import CNNClassifier

    n, px, reps = size("cuda", "n", quick), size("cuda", "image_size", quick), size("cuda", "reps", quick)
    epochs = {"arrays": size("cuda", "epochs", quick), "paths": size("cuda", "epochs_paths", quick)}
    X, y = images.binary(n, px)
    inputs = {"arrays": X, "paths": images.binary_paths(n)[0]}

    def fit(kind, params):
        def run():
            clf = CNNClassifier(max_epochs=epochs[kind], image_size=px, ood=False,
                                validation_fraction=None, device=device, random_state=SEED, **params)
            with Stopwatch(device == "cuda") as t:
                clf.fit(inputs[kind], y)
            return t.seconds
        return run

    fit(*variants_spec[0][1:])()  # CUDA context, cuDNN autotuning: untimed
    timed = {}
    for kind in ("arrays", "paths"):
        variants = {name: fit(k, params) for name, k, params in variants_spec if k == kind}
        timed.update(interleaved(variants, reps))
    # Each input's first variant is its reference.
    base = {}
    for name, kind, _ in variants_spec:
        base.setdefault(kind, timed[name][0])
    rows = []
    for name, kind, params in variants_spec:
        best, all_times = timed[name]
        rows.append({
            "benchmark": "cuda", "variant": name, "input": kind, **params,
            "images_per_s": n * epochs[kind] / best, "speedup": base[kind] / best,
            "seconds_best": best, "seconds_all": all_times,
            "n_images": n, "epochs": epochs[kind], "image_size": px,
        })
    log("cuda: " + "; ".join(f"{r['variant']} {r['images_per_s']:.0f} img/s" for r in rows))
    return rows


# --------------------------------------------------------------------------
# augmentation: per image vs in batches


def _paired_rows(benchmark, times, baseline, images_per_run, device, common):
    """Rows of ``times`` (name -> [(wall, cpu)] per repetition) with median speed-ups over ``baseline``."""
    rows = []
    pick = 1 if device == "cpu" else 0  # CPU time on a CPU (robust to other jobs), wall time on a GPU
    for name, ts in times.items():
        own = [t[pick] for t in ts]
        speedups = [b[pick] / o for b, o in zip(times[baseline], own, strict=True)]
        rows.append({
            "benchmark": benchmark, "variant": name,
            "images_per_s": images_per_run / _median([t[0] for t in ts]),
            "images_per_cpu_s": images_per_run / _median([t[1] for t in ts]),
            "seconds_all": [t[0] for t in ts], "cpu_seconds_all": [t[1] for t in ts],
            "speedup_vs_baseline": None if name == baseline else _median(speedups),
            "speedup_all": None if name == baseline else speedups, **common,
        })
    return rows


def _interleaved_pairs(variants, reps):
    """``reps`` interleaved runs of each (wall, cpu)-returning callable, after one untimed warm-up."""
    for fn in variants.values():
        fn()
    times = {name: [] for name in variants}
    loads = []
    for _ in range(reps):
        loads.append(round(os.getloadavg()[0], 2))
        for name, fn in variants.items():
            times[name].append(fn())
    return times, loads


def bench_augment(images, device, quick):
    import torch
    from _common import PerImage

    from skxray.augmentation import xray_augmentation
    from skxray.models import CNNClassifier

    reps, n_batches = size("augment", "reps", quick), size("augment", "batches", quick)
    cuda = device == "cuda"
    rows = []
    for px in size("augment", "image_sizes", quick):
        X, _ = images.binary(32 * n_batches, px)
        host = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).reshape(n_batches, 32, -1, px, px)
        on_device = host.to(device)
        for preset in ("light", "strong", "fastai"):
            augment = xray_augmentation(preset)

            def per_image(augment=augment, host=host):
                with Stopwatch(cuda) as t:
                    for batch in host:
                        torch.stack([augment(image) for image in batch]).to(device)
                return t.seconds, t.cpu_seconds

            def batched(augment=augment, on_device=on_device):
                with Stopwatch(cuda) as t:
                    for batch in on_device:
                        augment.augment_batch(batch)
                return t.seconds, t.cpu_seconds

            torch.manual_seed(SEED)
            times, loads = _interleaved_pairs({"per image": per_image, "augment_batch": batched}, reps)
            common = {"preset": preset, "image_size": px, "batch_size": 32, "n_images": 32 * n_batches,
                      "reps": reps, "load_average_1min_per_rep": loads,
                      "notes": f"augmentation alone, xray_augmentation('{preset}'), {px} px"}
            new = _paired_rows("augment", times, "per image", 32 * n_batches, device, common)
            log(f"augment {preset} {px} px: augment_batch {new[1]['speedup_vs_baseline']:.2f}x per image")
            rows += new
    n, epochs, px = size("augment", "n_fit", quick), size("augment", "epochs", quick), size("augment", "fit_image_size", quick)
    X, y = images.binary(n, px)
    for preset in ("light", "strong"):
        def fit(make, preset=preset):
            clf = CNNClassifier(max_epochs=epochs, batch_size=32, validation_fraction=None, ood=False,
                                image_size=px, device=device, random_state=SEED, augment=make(preset))
            with Stopwatch(cuda) as t:
                clf.fit(X, y)
            return t.seconds, t.cpu_seconds

        variants = {"fit, per image": lambda fit=fit: fit(lambda p: PerImage(xray_augmentation(p))),
                    "fit, augment_batch": lambda fit=fit: fit(xray_augmentation)}
        times, loads = _interleaved_pairs(variants, reps)
        common = {"preset": preset, "image_size": px, "batch_size": 32, "n_images": n, "epochs": epochs,
                  "reps": reps, "load_average_1min_per_rep": loads,
                  "notes": f"CNNClassifier.fit with augment=xray_augmentation('{preset}'), {px} px"}
        new = _paired_rows("augment", times, "fit, per image", n * epochs, device, common)
        log(f"augment fit {preset}: augment_batch {new[1]['speedup_vs_baseline']:.2f}x per image")
        rows += new
    return rows


# --------------------------------------------------------------------------
# main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, fewer repetitions")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma list of " + ", ".join(SECTIONS))
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", default="auto",
                   help="torch intra-op threads: an int, 'default', or 'auto' (calibrated)")
    p.add_argument("--out", default=None, help="JSON file (default results/speed.json)")
    p.add_argument("--phantom", action="store_true", help="synthetic images (smoke test only)")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of the other sections already in --out (rerun some sections only)")
    return p.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        return child_main(argv)
    args = parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise SystemExit(f"--sections: unknown {bad}; choose from {SECTIONS}")
    device = resolve_device(args.device)
    threads = configure_threads(args.threads)
    if device == "cuda":
        _SCALE["factor"] = dict(CUDA_SCALE)
    import torch

    out = Path(args.out) if args.out else default_out("speed.json", args.quick or args.phantom)
    images = Images(args.phantom)
    payload = {
        "machine": machine_info(device),
        "settings": {
            "quick": args.quick,
            "phantom": args.phantom,
            "sections": sections,
            "seed": SEED,
            **threads,
            "sizes": {k: {kk: size(k, kk, args.quick) for kk in v} for k, v in SIZES.items()},
            "method": (
                "variants interleaved, best time of each kept; ratios from the same run. The "
                "overhead ratio uses CPU time on a CPU device (1 thread: robust to other jobs), "
                "wall time on a GPU"
            ),
            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if device == "cuda" else None,
            "command": command_line(),
        },
        "results": [],
    }
    settings = payload["settings"]  # this run's, also when merged into an earlier file
    if args.merge:
        payload = _merged_payload(out, payload, sections)
    t0 = time.perf_counter()
    for section in sections:
        log(f"== {section}")
        with Stopwatch() as t:
            if section == "overhead":
                rows = bench_overhead(images, device, args.quick)
            elif section == "limit":
                rows = bench_limit(images, device, args.quick)
            elif section == "limit_resnet":
                rows = bench_limit_resnet(images, device, args.quick)
            elif section == "limit_compile":
                rows = bench_limit_compile(images, device, args.quick)
            elif section == "resnet_cache":
                rows = bench_resnet_cache(images, device, args.quick)
            elif section == "resnet_store":
                rows = bench_resnet_store(images, device, args.quick)
            elif section == "loading":
                rows = bench_loading(images, device, args.quick)
            elif section == "streaming":
                rows = bench_streaming(images, device, args.quick, threads["threads"])
            elif section == "inference":
                rows = bench_inference(images, device, args.quick)
            elif section == "cuda":
                rows = bench_cuda(images, device, args.quick)
            elif section == "segmenter":
                rows = bench_segmenter(images, device, args.quick, threads["threads"])
            elif section == "profile":
                rows = bench_profile(images, device, args.quick)
            elif section == "augment":
                rows = bench_augment(images, device, args.quick)
            else:
                rows = bench_roofline(images, device, args.quick, threads["threads"])
        for r in rows:
            r["device"] = device
        if args.quick:
            for r in rows:
                if "meets_target" in r:
                    r["meets_target"] = None
                    r["target"] += " (quick sizes: not checked)"
        payload["results"].extend(rows)
        settings.setdefault("section_seconds", {})[section] = t.seconds
        write_json(out, payload)
    if args.merge:  # the earlier run's total time stays where it was
        settings["total_time_s"] = time.perf_counter() - t0
        write_json(out, payload)
        print(markdown_table(payload))
        return payload
    return finish(payload, out, t0, markdown_table)


def _merged_payload(out, payload, sections):
    """The payload of ``out`` without the rows of ``sections``, this run's settings kept beside it.

    The machine and settings of the earlier run stay at the top, as they
    describe its rows; each rerun section's own are under ``reruns``.
    """
    if not out.exists():
        return payload
    old = json.loads(out.read_text(encoding="utf-8"))
    old["results"] = [r for r in old["results"] if r["benchmark"] not in sections]
    old["settings"].setdefault("reruns", {})
    for section in sections:
        old["settings"]["reruns"][section] = {"machine": payload["machine"], "settings": payload["settings"]}
    return old


def _fmt_or_blank(value, fmt):
    return "" if value is None else format(value, fmt)


def markdown_table(payload):
    """Markdown summary of a speed.json payload."""
    m = payload["machine"]
    lines = [
        f"Speed on {m.get('gpu') or m['cpu_model']} ({m['cpu_logical_cores']} logical cores, "
        f"device {m['device']}, {m['torch_num_threads']} torch thread(s)).",
        "",
        "| benchmark | variant | images/s | ratio / speed-up | target | other |",
        "|---|---|---|---|---|---|",
    ]
    for r in payload["results"]:
        ratio = next((r[k] for k in ("ratio", "speedup", "ratio_estimator_vs_this", "ratio_vs_memory",
                                     "speedup_vs_baseline") if r.get(k) is not None), None)
        other = []
        if r.get("peak_rss_mib") is not None:
            other.append(f"peak RSS {r['peak_rss_mib']:.0f} MiB")
        if r.get("seconds_best") is not None:
            other.append(f"{r['seconds_best']:.2f} s")
        if r.get("fraction_of_matmul") is not None:
            other.append(f"{r['achieved_gflops']:.1f} GFLOP/s = {r['fraction_of_matmul']:.1%} of "
                         f"matmul ({r['matmul_gflops']:.0f})")
        if r.get("fraction_of_matmul_cpu_time") is not None:
            other.append(f"per CPU second: {r['achieved_gflops_cpu_time']:.1f} GFLOP/s = "
                         f"{r['fraction_of_matmul_cpu_time']:.1%} of matmul "
                         f"({r['matmul_gflops_cpu_time']:.0f})")
        if r.get("ratio_cpu_time") is not None:
            other.append(f"CPU-time ratio {r['ratio_cpu_time']:.3f}, wall-time ratio "
                         f"{r['ratio_wall_time']:.3f}")
        if r.get("notes"):
            other.append(r["notes"])
        target = ""
        if r.get("target"):
            verdict = {True: "met", False: "NOT met", None: ""}[r.get("meets_target")]
            target = f"{r['target']} {verdict}".strip()
        lines.append(f"| {r['benchmark']} | {r['variant']} | {_fmt_or_blank(r.get('images_per_s'), '.1f')} "
                     f"| {_fmt_or_blank(ratio, '.3f')} | {target} | {'; '.join(other)} |")
    lines += ["", m["timing_note"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

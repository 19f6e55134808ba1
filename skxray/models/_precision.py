"""``amp="auto"``: bfloat16 autocast where it is measured to be faster, float32 elsewhere.

Whether bfloat16 autocast pays depends on the model, the input size, the
batch size and the chip, not on the device's name: on an NVIDIA H200 it was
0.91-1.03x float32 for the CNN and 0.83x for the frozen ResNet-50's
predictions (``benchmarks/results/gpu/speed_cuda.json``). So where bfloat16
autocast is supported natively (a GPU with bfloat16), ``amp="auto"`` times a
few steps of a copy of the fit's own module, float32 and bfloat16
interleaved, and takes bfloat16 only when it is at least :data:`MIN_SPEEDUP`
times as fast: a tie (1.0x within timing noise) stays float32, the more
accurate precision. On the CPU it does not measure (:data:`CPU_AUTO_MEASURES`:
there bfloat16 cost accuracy on real X-rays); ``amp=True`` still trains in
bfloat16 on a CPU with oneDNN's bfloat16 kernels.

The probe never touches the fit: it runs on a deep copy of the module (the
weights and BatchNorm statistics stay as built), on inputs drawn from a
private generator, under ``torch.random.fork_rng`` (dropout's draws are
undone), so the fit draws exactly what it would draw without the probe. Its
decision is cached per process by device, threads, module architecture, input
shape, batch size and mode, so that the fits of a grid search or of a test
suite pay once and agree. A resumed fit takes the decision its checkpoint
recorded instead of measuring again.
"""

import copy
import dataclasses
import hashlib
import json
import statistics
import time

import torch

__all__ = [
    "CPU_AUTO_MEASURES",
    "MEASURE",
    "MIN_SPEEDUP",
    "PROBE_REPEATS",
    "PROBE_WARMUP",
    "bf16_supported",
    "clear_cache",
    "measure_precision",
    "precision_record",
    "probe_key",
    "settle_precision",
]

#: bfloat16 must take at most 1/MIN_SPEEDUP of float32's time (10 % faster)
#: to be chosen: timing noise cannot turn a 1.0x case into bfloat16.
MIN_SPEEDUP = 1.10
#: Untimed steps of each precision first (the first bfloat16 steps build
#: their kernels), then timed steps, float32 and bfloat16 interleaved.
PROBE_WARMUP = 2
PROBE_REPEATS = 5

#: What :func:`skxray.models._distributed.resolve_autocast` returns for
#: ``amp="auto"`` where bfloat16 autocast is native: the fit measures.
MEASURE = "measure"
#: Whether ``amp="auto"`` measures on the CPU too (else: float32 there, no
#: probe). Set by a rule fixed before its run (``benchmarks/amp_cpu.py``):
#: bfloat16 may be chosen on the CPU only if it costs at most 1 point of
#: patient-grouped balanced accuracy on darkcovidnet (Covid-19 vs No_findings,
#: the default CNN at 64 px). It cost 1.60 points (96.8 % -> 95.2 %,
#: ``benchmarks/results/amp_cpu.json``), so the CPU stays float32 unless
#: ``amp=True`` asks for bfloat16.
CPU_AUTO_MEASURES = False

# (key) -> decision dict, for this process.
_CACHE = {}


def bf16_supported(device_type):
    """Whether ``device_type`` ("cuda", "cpu") runs bfloat16 autocast natively."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        try:
            # oneDNN's own test: AVX-512 BF16 (or AMX) instructions.
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def clear_cache():
    """Forget this process's decisions (the next fit of each kind measures again)."""
    _CACHE.clear()


def probe_key(module, device, input_shape, batch_size, mode):
    """What a decision depends on: device, threads, architecture, input shape, batch size, mode."""
    # The module's printed structure (layers and their sizes) and parameter
    # shapes name its architecture; the values of the weights do not matter.
    shapes = [(name, tuple(p.shape), p.requires_grad) for name, p in module.named_parameters()]
    digest = hashlib.sha1(f"{type(module).__qualname__}\0{module}\0{shapes}".encode()).hexdigest()[:16]
    threads = torch.get_num_threads() if torch.device(device).type == "cpu" else None
    return (str(device), threads, digest, tuple(int(s) for s in input_shape), int(batch_size), mode)


def _step(module, x, device_type, dtype, mode):
    """One forward (and, in "train" mode, backward) pass; gradients are dropped."""
    if mode == "train":
        with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            out = module(x)
        out.float().sum().backward()
        module.zero_grad(set_to_none=True)
    else:
        with torch.no_grad(), torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
            module(x)
    if device_type == "cuda":
        torch.cuda.synchronize()


def _time_steps(module, x, device_type, mode, timer):
    """Seconds per step of float32 and of bfloat16 autocast: the median of the interleaved repeats."""
    precisions = {"float32": None, "bfloat16": torch.bfloat16}
    for _ in range(PROBE_WARMUP):
        for dtype in precisions.values():
            _step(module, x, device_type, dtype, mode)
    times = {name: [] for name in precisions}
    for _ in range(PROBE_REPEATS):
        for name, dtype in precisions.items():
            start = timer()
            _step(module, x, device_type, dtype, mode)
            times[name].append(timer() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def measure_precision(module, device, input_shape, batch_size, *, mode="train", timer=time.perf_counter):
    """Time ``module`` in float32 and bfloat16 autocast; the decision, cached per process.

    Parameters
    ----------
    module : torch.nn.Module
        The fit's module, as built: it is copied, never run itself.
    device : str
        The training device.
    input_shape : tuple of int
        One input's shape, (channels, height, width) or (n_features,).
    batch_size : int
        The fit's batch size.
    mode : {"train", "predict"}, default="train"
        "train" times forward and backward passes in training mode (no
        optimizer step); "predict" times forward passes in evaluation mode
        without gradients (a frozen backbone that only extracts features).
    timer : callable, default=time.perf_counter
        The clock (seconds); tests pass their own.

    Returns
    -------
    decision : dict
        ``bfloat16`` (bool, the choice), ``float32_s`` and ``bfloat16_s``
        (seconds per step, the median of :data:`PROBE_REPEATS` interleaved
        steps each), ``speedup`` (float32_s / bfloat16_s), ``min_speedup``,
        ``batch_size``, ``input_shape``, ``mode``, ``device`` and ``threads``
        (CPU). The same dict for every fit with the same key
        (:func:`probe_key`) in this process.
    """
    key = probe_key(module, device, input_shape, batch_size, mode)
    if key in _CACHE:
        return dict(_CACHE[key])
    device_type = torch.device(device).type
    # The probe's own copy, without attached caches (a frozen backbone's
    # feature store must not record the probe's random inputs).
    store = getattr(module, "feature_store", None)
    memo = {} if store is None else {id(store): None}
    probe = copy.deepcopy(module, memo).to(device)
    probe.train(mode == "train")
    cuda_devices = [torch.device(device).index or 0] if device_type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        generator = torch.Generator().manual_seed(0)
        x = torch.rand((int(batch_size), *input_shape), generator=generator).to(device)
        seconds = _time_steps(probe, x, device_type, mode, timer)
    del probe
    speedup = seconds["float32"] / seconds["bfloat16"] if seconds["bfloat16"] > 0 else 0.0
    decision = {
        "bfloat16": bool(speedup >= MIN_SPEEDUP),
        "float32_s": float(seconds["float32"]),
        "bfloat16_s": float(seconds["bfloat16"]),
        "speedup": float(speedup),
        "min_speedup": MIN_SPEEDUP,
        "batch_size": int(batch_size),
        "input_shape": [int(s) for s in input_shape],
        "mode": mode,
        "device": str(device),
        "threads": key[1],
    }
    _CACHE[key] = decision
    return dict(decision)


def settle_precision(run, module, *, input_shape, batch_size, mode="train", resumed_state=None):
    """``run`` (a :class:`~skxray.models._fit_context.RunSettings`) with ``amp="auto"`` decided.

    A fit whose autocast is :data:`MEASURE` measures its module
    (:func:`measure_precision`), unless it resumes a checkpoint: then it takes
    the decision that run recorded in ``last.pt`` (``resumed_state``), so
    that the resumed fit equals the uninterrupted one; a checkpoint written
    before decisions were recorded keeps what ``"auto"`` meant then (bfloat16
    on CUDA, float32 elsewhere). Any other ``run`` comes back as it is.
    """
    if run.autocast != MEASURE:
        return run
    saved = None if resumed_state is None else resumed_state.get("precision")
    if saved is not None:
        record = json.loads(saved)
        bf16, probe = bool(record["amp"]), record.get("amp_probe")
    elif resumed_state is not None:
        bf16, probe = torch.device(run.device).type == "cuda", None
    else:
        probe = measure_precision(module, run.device, input_shape, batch_size, mode=mode)
        bf16 = probe["bfloat16"]
    return dataclasses.replace(run, autocast=torch.bfloat16 if bf16 else None, amp=bf16, amp_probe=probe)


def precision_record(run):
    """What ``last.pt`` keeps of a fit's precision (JSON text): ``amp`` and ``amp_probe``."""
    return json.dumps({"amp": bool(run.amp), "amp_probe": run.amp_probe})

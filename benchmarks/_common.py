"""Shared helpers of the benchmark scripts: machine description, JSON, data.

Not part of the skxray package. Every JSON file written here has the same
simple shape, read by the docs build (``docs/_ext/skxray_docgen.py``):

``machine``
    what ran it (CPU, cores, memory, versions, device, load average);
``settings``
    the seeds and the settings of every measurement;
``results``
    a list of flat dicts, one per measured configuration.

Some files add one more list of flat dicts (``folds`` in accuracy.json).
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

# OpenMP threads that busy-wait collapse throughput on a CPU shared with other
# jobs (measured: 2 threads 2-4x slower than 1). Passive waiting fixes that;
# it must be set before torch is imported. Set OMP_WAIT_POLICY=ACTIVE to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
# Reduced runs write here, so that they never replace the committed results
# of a full run (and the docs, which read results/*.json only, ignore them).
QUICK_RESULTS_DIR = RESULTS_DIR / "quick"

# Import skxray from this checkout even when it is not installed.
if str(REPO_DIR) not in sys.path:
    sys.path.insert(0, str(REPO_DIR))

DATASET = "darkcovidnet"
CLASSES_3 = ["Covid-19", "No_findings", "Pneumonia"]
CLASSES_BINARY = ["Covid-19", "No_findings"]
POSITIVE = "Covid-19"

SHARED_CPU_NOTE = (
    "Timings were taken on a machine whose CPU cores may be shared with other work; "
    "absolute times and images/s are only indicative. Only ratios of measurements taken "
    "side by side in the same run (interleaved repetitions, best of each kept) are meaningful."
)


class DataMissing(SystemExit):
    """Raised (as a clean exit with a message) when the image folder is absent."""


def data_root():
    """Folder of the darkcovidnet images, found through ``get_data_home()``."""
    from skxray.datasets import get_data_home

    return get_data_home() / DATASET


def require_data():
    """Return the data folder or exit with a clear message when it is absent."""
    root = data_root()
    if not (root / "manifest.csv").is_file():
        msg = (
            f"SKIPPED: the {DATASET} images were not found at {root} (no manifest.csv there).\n"
            "These benchmarks need the shared folder of 1,124 chest X-rays: point SKXRAY_DATA "
            f"to the folder that contains '{DATASET}/' (e.g. SKXRAY_DATA=/work/shared/data), "
            "or pass --phantom for a smoke run on synthetic images (results not comparable)."
        )
        print(msg, file=sys.stderr, flush=True)
        raise DataMissing(2)
    return root


def resolve_device(device):
    """'auto' -> 'cuda' when available, else 'cpu'; 'cuda' must be available."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        print("ERROR: --device cuda but torch sees no CUDA device.", file=sys.stderr)
        raise SystemExit(2)
    return device


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: The instruction-set extensions that change which float kernels torch runs on a CPU
#: (and so, over many epochs, which model the same seed trains): recorded per run.
SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def _cpu_simd():
    """The :data:`SIMD_FLAGS` this CPU has (from /proc/cpuinfo; None where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in SIMD_FLAGS if f in have]
    except OSError:
        pass
    return None


def _version(module_name):
    try:
        module = __import__(module_name)
        return getattr(module, "__version__", "unknown")
    except Exception:  # noqa: BLE001 - a missing optional package is just "absent"
        return None


def _git_commit():
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device="cpu"):
    """Description of the machine and software, for the ``machine`` key."""
    import psutil
    import torch

    info = {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_simd": _cpu_simd(),
        "cpu_logical_cores": psutil.cpu_count(logical=True),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torchvision": _version("torchvision"),
        "skorch": _version("skorch"),
        "sklearn": _version("sklearn"),
        "numpy": np.__version__,
        "skxray": _version("skxray"),
        "git_commit": _git_commit(),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "cuda": torch.version.cuda if device == "cuda" else None,
        "timing_note": SHARED_CPU_NOTE if device == "cpu" else (
            "GPU timings; data loading and preprocessing still run on the CPU."
        ),
    }
    return info


def jsonable(value):
    """``value`` as strict JSON: NaN becomes None, floats keep 6 digits, objects their repr.

    The benchmarks' own rules for their result files (skxray's conversion
    for its reports is private): numpy scalars and arrays become numbers and
    lists, mappings dicts with string keys, DataFrames ``{index: {column:
    value}}``, Series dicts, paths strings, anything else its ``repr``.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if np.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "to_dict") and hasattr(value, "index"):  # pandas
        return jsonable(value.to_dict(orient="index") if hasattr(value, "columns") else value.to_dict())
    if isinstance(value, Mapping):
        return {str(k.item() if isinstance(k, np.generic) else k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    return repr(value)


#: How accuracy.py's parts file stores a fold's out-of-fold arrays since it outgrew 512 KiB:
#: labels as indices into the record's ``classes`` (-1: the abstention answer, "uncertain"),
#: probabilities as the base64 of their little-endian bytes (float32 when that is exact).
OOF_ENCODING = "codes+base64"
ABSTAINED = "uncertain"


def encode_oof(arrays, classes):
    """A fold's OOF arrays in the compact, exact form of :data:`OOF_ENCODING`.

    ``arrays``: ``test_index``, ``y``, optional ``answer``, and ``proba*``
    arrays of shape (n, len(classes)).
    """
    import base64

    import numpy as np

    classes = list(classes)
    out = {"encoding": OOF_ENCODING, "test_index": np.asarray(arrays["test_index"]).tolist(),
           "y": [classes.index(v) for v in arrays["y"]]}
    if "answer" in arrays:
        out["answer"] = [classes.index(v) if v in classes else -1 for v in arrays["answer"]]
        if any(v not in classes and v != ABSTAINED for v in arrays["answer"]):
            raise ValueError(f"encode_oof: answers other than the classes and {ABSTAINED!r}")
    for key, values in arrays.items():
        if key.startswith("proba"):
            a = np.asarray(values, dtype=np.float64)
            dtype = "<f4" if np.array_equal(a.astype(np.float32), a, equal_nan=True) else "<f8"
            out[key] = {"dtype": dtype, "shape": list(a.shape),
                        "base64": base64.b64encode(a.astype(dtype).tobytes()).decode("ascii")}
    return out


def decode_oof(oof, classes):
    """A fold record's OOF arrays as plain lists (labels as strings), however they were stored.

    Records written before :data:`OOF_ENCODING` hold the lists themselves and
    come back as they are. Standard library only (the docs' figure tests read
    the parts file too).
    """
    import array
    import base64

    if oof.get("encoding") is None:
        return {k: v for k, v in oof.items()}
    if oof["encoding"] != OOF_ENCODING:
        raise ValueError(f"decode_oof: unknown encoding {oof['encoding']!r}")
    classes = list(classes)
    out = {"test_index": list(oof["test_index"]), "y": [classes[i] for i in oof["y"]]}
    if "answer" in oof:
        out["answer"] = [classes[i] if i >= 0 else ABSTAINED for i in oof["answer"]]
    for key, value in oof.items():
        if key.startswith("proba"):
            flat = array.array({"<f4": "f", "<f8": "d"}[value["dtype"]], base64.b64decode(value["base64"]))
            if sys.byteorder != "little":
                flat.byteswap()
            n, k = value["shape"]
            out[key] = [list(flat[i * k:(i + 1) * k]) for i in range(n)]
    return out


def write_json(path, payload):
    """Write ``payload`` atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(payload), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def finish(payload, out, started, table):
    """End a benchmark run: record its total time, write ``out``, print ``table(payload)``."""
    payload["settings"]["total_time_s"] = time.perf_counter() - started
    write_json(out, payload)
    print()
    print(table(payload))
    log(f"done in {payload['settings']['total_time_s']:.0f} s; results in {out}")
    return payload


def default_out(name, quick):
    return (QUICK_RESULTS_DIR if quick else RESULTS_DIR) / name


class Stopwatch:
    """``with Stopwatch() as t: ...`` then ``t.seconds`` (wall) and ``t.cpu_seconds``."""

    def __init__(self, cuda=False):
        self.cuda = cuda
        self.seconds = None
        self.cpu_seconds = None

    def _sync(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def __enter__(self):
        self._sync()
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.seconds = time.perf_counter() - self._t0
        # CPU time of this process (all its threads): on a shared CPU it
        # counts only the cycles this process got, so it is far less noisy.
        self.cpu_seconds = time.process_time() - self._c0
        return False


def command_line():
    """The command that ran, with the script path relative to the repository."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(Path(__file__).resolve().parents[1])
    except ValueError:
        script = Path(script.name)
    return " ".join([script.as_posix(), *sys.argv[1:]])


def log(*args):
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}]", *args, flush=True)


# --------------------------------------------------------------------------
# data


def load_metadata(root):
    """File paths, labels and patient ids of all three classes (nothing decoded)."""
    from skxray.datasets import load_image_folder

    return load_image_folder(root, classes=CLASSES_3, image_size=None)


def load_pixels(root, image_size, n_jobs=-1, keep_aspect="crop"):
    """All 1,124 images of the three classes decoded at ``image_size`` (one call per size)."""
    from skxray.datasets import load_image_folder

    return load_image_folder(
        root, classes=CLASSES_3, image_size=image_size, n_jobs=n_jobs, keep_aspect=keep_aspect
    )


def phantom_bunch(image_size, n_samples=1124, random_state=0):
    """Synthetic stand-in with the real set's class counts (smoke runs only)."""
    from sklearn.utils import Bunch

    from skxray.datasets import make_phantom_cxr

    counts = {"Covid-19": 124, "No_findings": 500, "Pneumonia": 500}
    scale = n_samples / 1124
    X_parts, y_parts, g_parts = [], [], []
    offset = 0
    for i, (name, count) in enumerate(counts.items()):
        n = max(6, round(count * scale))
        # make_phantom_cxr balances its classes: draw each class on its own
        # (twice as many images, half of them of the class).
        X, y, g = make_phantom_cxr(
            2 * n,
            classes=(name, "__other__"),
            image_size=max(16, image_size),
            random_state=random_state + i,
            return_groups=True,
        )
        keep = np.flatnonzero(y == name)[:n]
        X_parts.append(X[keep])
        y_parts.append(y[keep])
        g_parts.append(np.asarray([f"{name}-{v + offset}" for v in g[keep]], dtype=object))
        offset += 10_000
    X = np.concatenate(X_parts)
    if X.shape[-1] != image_size:
        from skxray.preprocessing import resize_images

        X = resize_images(X, image_size)
    return Bunch(
        data=X.astype(np.float32),
        target=np.concatenate(y_parts).astype(object),
        groups=np.concatenate(g_parts),
        filenames=None,
        target_names=list(counts),
    )


def lung_mask(height, width):
    """Central lung fields (``skxray.explain.central_lung_mask``) and their name for the results."""
    from skxray.explain import central_lung_mask

    return central_lung_mask(height, width), "skxray.explain.central_lung_mask"


# --------------------------------------------------------------------------
# threads


def _conv_step_seconds(threads, reps=3):
    """Best time of one small CNN training step with ``threads`` intra-op threads."""
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 16 * 16, 1),
    )
    x = torch.rand(32, 1, 64, 64, generator=gen)
    best = float("inf")
    for _ in range(reps + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        net(x).sum().backward()
        best = min(best, time.perf_counter() - t0)
    return best


def configure_threads(setting):
    """Set torch's intra-op threads: an int, or "auto" (calibrated), or "default".

    On a CPU shared with other jobs, OpenMP's busy-waiting threads can make
    two threads several times slower than one; "auto" times a small
    training step with 1 thread and with every core, interleaved, and keeps
    the faster. Returns a dict describing the choice (for the JSON).
    """
    import torch

    default = torch.get_num_threads()
    if setting in (None, "default"):
        return {"threads": default, "threads_setting": "default"}
    if setting != "auto":
        torch.set_num_threads(int(setting))
        return {"threads": int(setting), "threads_setting": "fixed"}
    candidates = sorted({1, default})
    if len(candidates) == 1:
        return {"threads": default, "threads_setting": "auto (only one core)"}
    timings = {n: float("inf") for n in candidates}
    for _ in range(2):
        for n in candidates:
            timings[n] = min(timings[n], _conv_step_seconds(n))
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    detail = ", ".join(f"{n} thread(s): {1e3 * t:.1f} ms" for n, t in timings.items())
    log(f"threads: auto-calibrated on a small training step ({detail}) -> {best}")
    return {
        "threads": best,
        "threads_setting": f"auto (small training step: {detail})",
    }


class PerImage:
    """An augmentation as a plain callable, which the estimators apply image by image.

    skxray's augmentations run in batches (``augment_batch``); wrapped, they
    take the per-image path of earlier releases, so the two can be compared.
    """

    def __init__(self, augment):
        self.augment = augment

    def __call__(self, img):
        return self.augment(img)


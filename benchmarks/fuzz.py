"""Coverage-guided fuzzing of :func:`skxray.io.read_image` with atheris.

``make fuzz SECONDS=N`` runs ``python benchmarks/fuzz.py --seconds N``: it
writes a seed corpus of small valid files of every kind skxray reads (PNG
8/16-bit, palette, RGBA; JPEG; TIFF; BMP; DICOM MONOCHROME1/2 with and
without a VOI LUT, RLE-, JPEG-, JPEG 2000- and deflate-compressed), then
fuzzes ``read_image`` under libFuzzer for N seconds and writes executions,
coverage and findings to ``benchmarks/results/fuzz.json``.

The seed corpus is generated in code so that no image is committed.

A *finding* is any exception other than :class:`~skxray.io.ImageReadError`,
or a decoded image that breaks the documented contract (float32, 2-D, finite,
in [0, 1]). By default the driver runs the fuzzer with ``--keep-going``: each
distinct finding (same exception type and raising line) is saved once to
``benchmarks/results/fuzz-findings/`` and fuzzing goes on, so that one long
unattended run reports every bug it meets, not just the first. Without
``--keep-going`` (as in the pytest smoke test) the first finding ends the run
with libFuzzer's exit status 77 and a ``crash-<sha1>`` file.

Replay a finding (exit status 0 once it is fixed)::

    python benchmarks/fuzz.py --worker path/to/crash-file     # instrumented, as libFuzzer
    python benchmarks/fuzz.py --check path/to/crash-file      # plain, timed, one JSON line

Timeouts are replayed with ``--check`` when the summary is written, so that a
stall of the niced fuzzer on a busy machine is told apart from a real hang.

Coverage guidance only sees Python bytecode: skxray, Pillow's Python plugins
(PNG, TIFF, BMP, JPEG headers) and pydicom are instrumented; Pillow's C
decoders are exercised blind.
"""

import argparse
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "fuzz.json"
FINDINGS_DIR = BENCH_DIR / "results" / "fuzz-findings"
# Import the skxray of this checkout, not another one installed in the environment.
sys.path.insert(0, str(BENCH_DIR.parent))

# Small enough that a fuzzed header cannot make one input take seconds, big
# enough for every seed.
MAX_PIXELS = 1_000_000


# ----------------------------------------------------------------- corpus


def _png_bytes(arr, **kwargs):
    from PIL import Image

    buf = io.BytesIO()
    (arr if isinstance(arr, Image.Image) else Image.fromarray(arr)).save(buf, **kwargs)
    return buf.getvalue()


def _dicom_bytes(pixels, *, photometric="MONOCHROME2", bits_stored=None, syntax=None, **elements):
    import numpy as np

    from skxray.testing import dicom_dataset

    # A fixed UID keeps the corpus byte-for-byte reproducible.
    ds = dicom_dataset(uid="1.2.826.0.1.3680043.8.498.1")
    pixels = np.asarray(pixels)
    # set_pixel_data would draw a new SOP instance UID on every run, undoing the fixed one.
    ds.set_pixel_data(
        pixels, photometric, bits_stored or pixels.dtype.itemsize * 8, generate_instance_uid=False
    )
    for key, value in elements.items():
        setattr(ds, key, value)
    if syntax is not None:
        syntax(ds)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _encapsulated(codec_bytes, uid):
    """Return a transfer-syntax setter that stores one pre-encoded frame."""

    def apply(ds):
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([codec_bytes])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = uid

    return apply


def seed_corpus():
    """Return ``{name: bytes}``: one tiny valid file of each supported kind.

    Returns
    -------
    dict of str to bytes
        File name (its extension tells the kind) to content; each under a
        few kilobytes.
    """
    import numpy as np
    from PIL import Image
    from pydicom.dataset import Dataset
    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        RLELossless,
    )

    rng = np.random.default_rng(0)
    g8 = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    g12 = rng.integers(0, 4096, (8, 8)).astype(np.uint16)
    g16 = rng.integers(0, 65536, (8, 8)).astype(np.uint16)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)

    palette = Image.fromarray(g8).convert("P")
    palette_t = palette.copy()
    palette_t.info["transparency"] = 0
    tiff_multi = io.BytesIO()
    Image.fromarray(g8).save(
        tiff_multi, format="TIFF", save_all=True, append_images=[Image.fromarray(255 - g8)]
    )

    voi = Dataset()
    voi.add_new("LUTDescriptor", "US", [4, 0, 16])
    voi.add_new("LUTData", "US", [100, 200, 300, 500])

    def rle(ds):
        ds.compress(RLELossless)

    def deflate(ds):
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian

    jpeg8 = _png_bytes(g8, format="JPEG", quality=90)
    j2k = _png_bytes(Image.fromarray(g8), format="JPEG2000", irreversible=False, no_jp2=True)

    return {
        "gray8.png": _png_bytes(g8, format="PNG"),
        "gray16.png": _png_bytes(Image.fromarray(g16), format="PNG"),
        "palette.png": _png_bytes(palette, format="PNG"),
        "palette_transparent.png": _png_bytes(palette_t, format="PNG"),
        "rgba.png": _png_bytes(rgba, format="PNG"),
        "rgb.jpg": _png_bytes(rgb, format="JPEG", quality=80),
        "gray.jpg": jpeg8,
        "gray8.tif": _png_bytes(g8, format="TIFF"),
        "gray16_deflate.tif": _png_bytes(Image.fromarray(g16), format="TIFF", compression="tiff_adobe_deflate"),
        "rgb_lzw.tif": _png_bytes(rgb, format="TIFF", compression="tiff_lzw"),
        "float.tif": _png_bytes(Image.fromarray(g8.astype(np.float32) / 300), format="TIFF"),
        "two_pages.tif": tiff_multi.getvalue(),
        "rgb.bmp": _png_bytes(rgb, format="BMP"),
        "palette.bmp": _png_bytes(palette, format="BMP"),
        "mono2.dcm": _dicom_bytes(g12, bits_stored=12),
        "mono1.dcm": _dicom_bytes(g12, photometric="MONOCHROME1", bits_stored=12),
        "mono2_window.dcm": _dicom_bytes(
            g12, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024,
            WindowCenter=0, WindowWidth=2049,
        ),
        "mono2_voilut.dcm": _dicom_bytes(g12, bits_stored=12, VOILUTSequence=[voi]),
        "mono1_signed.dcm": _dicom_bytes(
            (g12.astype(np.int16) - 2048), photometric="MONOCHROME1", bits_stored=12
        ),
        "rgb.dcm": _dicom_bytes(rgb, photometric="RGB", bits_stored=8),
        "mono2_rle.dcm": _dicom_bytes(g12, bits_stored=12, syntax=rle),
        "mono2_deflate.dcm": _dicom_bytes(g12, bits_stored=12, syntax=deflate),
        "mono2_jpeg.dcm": _dicom_bytes(g8, bits_stored=8, syntax=_encapsulated(jpeg8, JPEGBaseline8Bit)),
        "mono2_j2k.dcm": _dicom_bytes(g8, bits_stored=8, syntax=_encapsulated(j2k, JPEG2000Lossless)),
        "multiframe.dcm": _dicom_bytes(np.stack([g12, 4095 - g12]), bits_stored=12),
    }


def write_corpus(directory):
    """Write :func:`seed_corpus` into ``directory``; return the number of files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    corpus = seed_corpus()
    for name, data in corpus.items():
        (directory / name).write_bytes(data)
    return len(corpus)


# ----------------------------------------------------------------- target


def _suffix_for(data):
    # The extension matters only for DICOM without its DICM marker (read with
    # force=True). Deriving it from the input keeps a crash file replayable.
    return ".dcm" if len(data) % 3 == 0 else ".img"


def _signature(exc):
    """Exception type plus the innermost frame: one per distinct bug."""
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    where = f"{Path(last.filename).name}:{last.lineno}" if last else "?"
    return f"{type(exc).__name__} at {where}"


class ContractError(AssertionError):
    """A decoded image that breaks read_image's documented contract."""


def make_target(scratch, keep_going, findings_dir):
    """Return the ``TestOneInput`` callback for atheris."""
    import numpy as np

    from skxray.io import ImageReadError, read_image

    seen = set()

    def check(img, path):
        if img.dtype != np.float32 or img.ndim != 2 or 0 in img.shape:
            raise ContractError(f"{path}: bad array {img.dtype} {img.shape}")
        if not np.isfinite(img).all() or img.min() < 0 or img.max() > 1:
            raise ContractError(f"{path}: values outside [0, 1] or not finite")

    def one_input(data):
        path = os.path.join(scratch, "input" + _suffix_for(data))
        with open(path, "wb") as fh:
            fh.write(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom and Pillow warn on odd files
                try:
                    img = read_image(path, max_pixels=MAX_PIXELS)
                except ImageReadError as exc:
                    if exc.path != path:
                        raise ContractError(f"error names {exc.path!r}, not {path!r}") from exc
                    return
                check(img, path)
        except Exception as exc:
            if not keep_going:
                raise
            sig = _signature(exc)
            if sig in seen:
                return
            seen.add(sig)
            findings_dir.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha1(data).hexdigest()
            (findings_dir / f"finding-{digest}").write_bytes(data)
            record = {
                "signature": sig,
                "message": str(exc)[:500],
                "input": f"finding-{digest}",
                "traceback": traceback.format_exc()[-3000:],
            }
            with open(findings_dir / "findings.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            print(f"FINDING {sig}: {str(exc)[:200]}", file=sys.stderr, flush=True)

    return one_input


def worker(argv, keep_going, findings_dir):
    """Run libFuzzer in this process; never returns."""
    import atheris

    with atheris.instrument_imports(include=["skxray", "PIL", "pydicom"]):
        import PIL.BmpImagePlugin  # noqa: F401
        import PIL.Image  # noqa: F401
        import PIL.JpegImagePlugin  # noqa: F401
        import PIL.PngImagePlugin  # noqa: F401
        import PIL.TiffImagePlugin  # noqa: F401
        import pydicom  # noqa: F401
        import pydicom.encaps  # noqa: F401
        import pydicom.pixels  # noqa: F401
        import pydicom.pixels.decoders.base  # noqa: F401
        import pydicom.pixels.decoders.rle  # noqa: F401
        import pydicom.pixels.processing  # noqa: F401

        import skxray.io  # noqa: F401

    scratch = tempfile.mkdtemp(prefix="skxray-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    target = make_target(scratch, keep_going, findings_dir)
    atheris.Setup(argv, target)
    atheris.Fuzz()


# ----------------------------------------------------------------- driver


_STAT = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")


def drive(seconds, out, corpus_dir, findings_dir, max_len, timeout, extra):
    """Run the worker for ``seconds`` seconds, then write the summary JSON."""
    corpus_dir = Path(corpus_dir)
    findings_dir = Path(findings_dir)
    n_seeds = write_corpus(corpus_dir)
    cmd = [
        sys.executable, __file__, "--worker", "--keep-going",
        "--findings", str(findings_dir),
        f"-max_total_time={seconds}", f"-max_len={max_len}", f"-timeout={timeout}",
        "-rss_limit_mb=2048", "-print_final_stats=1",
        f"-artifact_prefix={findings_dir}/", *extra, str(corpus_dir),
    ]
    findings_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    restarts, status = 0, None
    # libFuzzer stops at a timeout or an out-of-memory input even with
    # --keep-going (those are not Python exceptions): summarise() records it
    # as a finding; go on with the time left and the corpus grown so far.
    while True:
        left = int(seconds - (time.time() - start))
        if left < 5:
            break
        run = [c if not c.startswith("-max_total_time=") else f"-max_total_time={left}" for c in cmd]
        # Written to a file as it runs, so that a long run can be watched.
        log_path = findings_dir / f"libfuzzer-{restarts}.log"
        with open(log_path, "w", encoding="utf-8") as log_fh:
            status = subprocess.run(run, stdout=log_fh, stderr=subprocess.STDOUT).returncode
        if status == 0:
            break
        restarts += 1
        if restarts > 20:
            break
    meta = {"seconds": seconds, "max_len": max_len, "timeout_s": timeout, "max_pixels": MAX_PIXELS,
            "seed_files": n_seeds, "extra_flags": extra, "duration_s": round(time.time() - start, 1),
            "restarts": restarts, "exit_status": status}
    (findings_dir / "run.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return summarise(findings_dir, out)


def summarise(findings_dir, out):
    """Write ``out`` (fuzz.json) from the logs and findings in ``findings_dir``."""
    findings_dir = Path(findings_dir)
    meta = json.loads((findings_dir / "run.json").read_text(encoding="utf-8"))
    logs = sorted(findings_dir.glob("libfuzzer-*.log"), key=lambda p: int(p.stem.split("-")[1]))
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in logs]
    executed = 0
    for text in texts:
        runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
        if runs:
            executed += int(runs[-1])
        else:  # killed without final stats: its last status line
            stats = _STAT.findall(text)
            executed += int(stats[-1][0]) if stats else 0
    stats = _STAT.findall("\n".join(texts))
    last = stats[-1] if stats else ("0", "0", "0", "0")
    findings = []
    jsonl = findings_dir / "findings.jsonl"
    if jsonl.is_file():
        for line in jsonl.read_text().splitlines():
            if line.strip():
                f = json.loads(line)
                findings.append({k: f[k] for k in ("signature", "message", "input")})
    # Timeouts, slow units and out-of-memory stops: replayed without
    # instrumentation, so that a stall of a low-priority process on a busy
    # machine is told apart from a real hang.
    for text in texts:
        reason = re.findall(r"ERROR: libFuzzer: ([^\n]+)", text)
        if not reason:
            continue
        artifacts = re.findall(r"Test unit written to (\S+)", text)
        entry = {"signature": f"libFuzzer: {reason[-1].strip()}", "message": "",
                 "input": [Path(a).name for a in artifacts]}
        # Looked up in findings_dir too: the folder may have been moved since.
        found = [Path(a) if Path(a).is_file() else findings_dir / Path(a).name for a in artifacts]
        entry["replay"] = [_replay(p) for p in found if p.is_file()]
        findings.append(entry)
    payload = {
        "target": "skxray.io.read_image",
        "fuzzer": "atheris (libFuzzer), instrumented: skxray, PIL, pydicom",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "versions": _versions(),
        "settings": {k: meta[k] for k in ("seconds", "max_len", "timeout_s", "max_pixels",
                                          "seed_files", "extra_flags") if k in meta},
        "duration_s": meta.get("duration_s"),
        "restarts": meta.get("restarts"),
        "exit_status": meta.get("exit_status"),
        "executions": executed,
        "coverage": {"edges": int(last[1]), "features": int(last[2]), "corpus": int(last[3])},
        "findings": findings,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: payload[k] for k in ("duration_s", "executions", "coverage")}))
    print(f"{len(findings)} finding(s); summary in {out}")
    return 0 if not findings else 1


def _replay(artifact):
    """Read one input again in a fresh, uninstrumented process; report time and outcome."""
    proc = subprocess.run([sys.executable, __file__, "--check", str(artifact)],
                          capture_output=True, text=True)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"input": artifact.name, "outcome": f"exit {proc.returncode}: {proc.stderr[-300:]}"}


def check(paths):
    """Read each input as the harness does; print one JSON line each; 1 if any finding."""
    from skxray.io import ImageReadError, read_image

    status = 0
    scratch = tempfile.mkdtemp(prefix="skxray-fuzz-check-")
    for src in paths:
        data = Path(src).read_bytes()
        path = os.path.join(scratch, "input" + _suffix_for(data))
        Path(path).write_bytes(data)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                img = read_image(path, max_pixels=MAX_PIXELS)
                outcome = f"read {img.shape}"
            except ImageReadError as exc:
                outcome = f"ImageReadError: {exc.reason}"[:300]
            except Exception as exc:  # noqa: BLE001 - that is the finding
                outcome = f"FINDING {type(exc).__name__}: {exc}"[:300]
                status = 1
        print(json.dumps({"input": Path(src).name, "seconds": round(time.perf_counter() - start, 3),
                          "outcome": outcome}))
    return status


def _versions():
    import numpy
    import PIL
    import pydicom

    import skxray

    out = {"skxray": skxray.__version__, "numpy": numpy.__version__,
           "pillow": PIL.__version__, "pydicom": pydicom.__version__}
    try:
        from importlib.metadata import version

        out["atheris"] = version("atheris")
    except Exception:  # noqa: BLE001 - informative only
        pass
    return out


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true",
                        help="run libFuzzer in this process; other arguments go to libFuzzer")
    parser.add_argument("--keep-going", action="store_true",
                        help="record each distinct finding and go on fuzzing")
    parser.add_argument("--findings", default=str(FINDINGS_DIR))
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--corpus", default=None,
                        help="corpus folder (default: a temporary one)")
    parser.add_argument("--max-len", type=int, default=4096)
    parser.add_argument("--timeout", type=int, default=120,
                        help="seconds one input may take (generous: the run is niced on a shared machine)")
    parser.add_argument("--summarise", metavar="FINDINGS_DIR",
                        help="only rewrite --out from an earlier run's findings folder")
    parser.add_argument("--check", nargs="+", metavar="FILE",
                        help="read these inputs without instrumentation and report each")
    parser.add_argument("--write-corpus", metavar="DIR",
                        help="only write the seed corpus into DIR")
    args, rest = parser.parse_known_args(argv[1:])
    if args.check:
        return check(args.check)
    if args.summarise:
        return summarise(args.summarise, args.out)
    if args.write_corpus:
        print(write_corpus(args.write_corpus))
        return 0
    if args.worker:
        worker([argv[0], *rest], args.keep_going, Path(args.findings))
        return 0  # not reached: atheris.Fuzz() exits the process
    with tempfile.TemporaryDirectory() as tmp:
        return drive(args.seconds, args.out, args.corpus or tmp, Path(args.findings),
                     args.max_len, args.timeout, rest)


if __name__ == "__main__":
    sys.exit(main())

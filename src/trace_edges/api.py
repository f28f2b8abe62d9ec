"""The Python API for one image: the workflow's edge sources, proposals and BGP as plain calls.

    from trace_edges.api import bgp, edge_source, load_image, proposals

    config = "config.yaml"                  # or a dict (partial: schema defaults fill the rest), or None
    image = load_image("photo.jpg")         # uint8 [H, W, 3] RGB: EXIF-rotated, grayscale/CMYK/palette -> RGB
    E = edge_source("sobel", config)(image)               # float32 [H, W] in [0, 1]
    masks, scores = proposals(image, config)              # the configured proposals.method
    masks, scores = bgp(masks, scores, E, config)         # split -> propagate -> merge (paper §3.5)

Every call runs the code the workflow's stages run, with the same config blocks, so a result here
equals the workflow's for the same image and config (``tests/test_api.py``): ``edge_source`` wraps
:func:`trace_edges.edges.get_edge_source` (the ``edges`` stage; for ``trace_teacher`` the one-call
form of the trajectory + teacher_labels stages, :class:`trace_edges.teacher.source.TeacherEdgeSource`;
for ``trace_student`` the ``student_infer`` model), ``proposals`` the per-image proposer of the
``proposals`` stage (:func:`trace_edges.proposals.get_proposer`), ``bgp`` the function the ``bgp``
stage calls per image (:func:`trace_edges.bgp.run_bgp`).

The module is light to import (numpy, torch and the models load on first use). It is
``trace_edges.api``, not the package top level: ``trace_edges.bgp`` is the BGP subpackage, so a
top-level ``bgp`` function would be shadowed as soon as the subpackage is imported. Documented in
docs/api.md, whose example the tests run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["EdgeFunction", "bgp", "edge_source", "load_config", "load_image", "proposals"]

ConfigLike = "Mapping[str, Any] | str | Path | Sequence[str | Path] | None"


def load_config(config: ConfigLike = None) -> dict[str, Any]:
    """A validated whole config: ``None`` = the schema defaults; a mapping = those keys over the
    defaults; a path = that YAML file; a list of paths = the files merged in order, as Snakemake
    merges ``--configfile`` (e.g. ``["config.yaml", "config.paper.yaml"]``)."""
    from trace_edges.config import load_workflow_config, validate

    if config is None or isinstance(config, Mapping):
        return validate(dict(config or {}))
    if isinstance(config, (str, Path)):
        config = [config]
    return load_workflow_config(*config)


def load_image(path: str | Path):
    """``uint8 [H, W, 3]`` RGB, as every stage loads an image (:func:`trace_edges.data.images.load_rgb`)."""
    from trace_edges.data.images import load_rgb

    return load_rgb(path)


def _rgb(image):
    if isinstance(image, (str, Path)):
        return load_image(image)
    import numpy as np

    if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image: the loader's conversions
        from trace_edges.data.images import _to_rgb

        image = _to_rgb(image)
    return np.asarray(image)


class EdgeFunction:
    """``E = fn(image)``: the edge map ``float32 [H, W]`` in [0, 1] at the image's size, for an
    image path, a PIL image or a ``uint8 [H, W, 3]`` RGB array. ``fn.source`` is the
    :class:`trace_edges.edges.EdgeSource` (its ``params``, ``describe()``)."""

    def __init__(self, source):
        self.source = source
        self.name = source.name

    def __call__(self, image):
        return self.source.compute(_rgb(image))

    def __repr__(self) -> str:
        return f"EdgeFunction({self.name!r})"


def edge_source(name: str, config: ConfigLike = None, *, checkpoint: str | Path | None = None) -> EdgeFunction:
    """The edge source ``name`` (``sobel``, ``canny``, ``hed``, ``trace_teacher``, ``trace_student``; not
    the ORACLE ``oracle_gt``, which reads a dataset's ground truth, not an image) configured
    as the workflow configures it: ``edges.<name>`` for sobel, canny and hed, the ``teacher`` block
    (and ``seed``) for ``trace_teacher``, the ``student`` block plus ``checkpoint`` (a trained
    ``model.safetensors``, e.g. ``results/embedded/student/sd3/model.safetensors``) for ``trace_student``."""
    from trace_edges.edges import get_edge_source
    from trace_edges.errors import ConfigError

    cfg = load_config(config)
    if name == "trace_teacher":
        src = get_edge_source(name, cfg["teacher"])
        src.seed = cfg["seed"]  # the trajectory stage's --seed
    elif name == "trace_student":
        if checkpoint is None:
            raise ConfigError("edge_source('trace_student') needs checkpoint= (a trained model.safetensors)",
                              fix="run the workflow's distill stage (snakemake distill) and pass "
                                  "results/<preset>/student/<family>/model.safetensors")
        src = get_edge_source(name, {**cfg["student"], "checkpoint": str(checkpoint)})
    else:
        src = get_edge_source(name, cfg["edges"].get(name, {}))
    return EdgeFunction(src)


def proposals(image, config: ConfigLike = None):
    """Base instance proposals ``(masks, scores)`` of one image with the configured
    ``proposals.method`` (``felzenszwalb`` or ``maskcut``; ``external`` reads a results file of a
    whole dataset and has no per-image form)."""
    from trace_edges.errors import ConfigError
    from trace_edges.proposals import get_proposer

    cfg = load_config(config)
    method = cfg["proposals"]["method"]
    if method == "external":
        raise ConfigError("proposals.method 'external' imports a results JSON of a whole dataset: no per-image call",
                          fix="use felzenszwalb or maskcut here, or read the JSON with "
                              "trace_edges.proposals.external.load_external")
    return get_proposer(method)(_rgb(image), cfg["proposals"][method])


def bgp(masks: Sequence[Any], scores: Sequence[float], edge, config: ConfigLike = None):
    """Refine ``masks`` (boolean ``[H, W]``) with scores by the edge map ``edge`` (``float [H, W]`` in
    [0, 1]) with the config's ``bgp`` block: returns ``(masks, scores)``, sorted by descending score.
    No masks in, no masks out (as in the bgp stage)."""
    import numpy as np

    from trace_edges.bgp import bgp_params, run_bgp

    params = bgp_params(load_config(config)["bgp"])
    if not len(masks):
        return [], np.zeros(0, dtype=np.float64)
    return run_bgp(list(masks), list(scores), edge, params)


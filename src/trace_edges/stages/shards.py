"""Shards: a per-image stage cut into jobs of ``size`` consecutive images of the data manifest.

Shared by the Snakefile (how many jobs) and the stages (which images a job takes, what it leaves
for its gather). Shard ``i`` holds manifest images ``[i * size, (i + 1) * size)``: boundaries
follow the manifest order (sorted image ids), so images appended at the end change only the last
shard and add new ones; every per-image result stays cached by its own key (``run_items``), so a
shard job rerun over mostly unchanged images redoes only the new ones.

A shard job writes its per-image results where the unsharded stage writes them, then a small
*shard file* (the declared output) naming its images and the stage parameters; the stage's gather
job reads the shard files (:func:`read_shard_files`: they must cover the manifest exactly, in
order) and writes the stage's one output as the unsharded stage does. A stage with one shard runs
unsharded, as one job (the embedded default).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from trace_edges.errors import ConfigError, DataError
from trace_edges.io import read_json, write_json

#: the per-image stages that config ``shards.<stage>`` cuts into jobs (the teacher's trajectory has
#: its own ``teacher.shard_size``)
SHARDED_STAGES = ("edges", "proposals", "bgp", "wps", "score_edges")

SHARD_FORMAT = "trace-edges-shard/1"


@dataclass(frozen=True)
class ShardJob:
    """One shard job: shard ``index`` of ``size`` images; its shard file goes to ``out``."""

    index: int
    size: int
    out: str | Path

    def images(self, images: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        return shard_images(images, self.index, self.size)

    def write(self, *, stage: str, images: Sequence[Mapping[str, Any]], params: Mapping[str, Any],
              extra: Mapping[str, Any] | None = None) -> None:
        write_shard_file(self.out, stage=stage, shard=self.index, shard_size=self.size, images=images,
                         params=params, extra=extra)


def num_shards(n_images: int, shard_size: int) -> int:
    return max(1, math.ceil(n_images / shard_size))


def stage_shards(shards_block: Mapping[str, Any], stage: str, n_images: int) -> int:
    """Jobs of ``stage`` for ``n_images`` images (config ``shards.<stage>``; null = 1)."""
    if stage not in SHARDED_STAGES:
        raise ValueError(f"{stage!r} is not a sharded stage ({', '.join(SHARDED_STAGES)})")
    size = shards_block.get(stage)
    return 1 if size is None else num_shards(n_images, int(size))


def shard_bounds(n_images: int, shard_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` manifest positions of every shard."""
    return [(i * shard_size, min(n_images, (i + 1) * shard_size)) for i in range(num_shards(n_images, shard_size))]


def shard_images(images: Sequence[Mapping[str, Any]], shard: int, shard_size: int) -> list[Mapping[str, Any]]:
    """The manifest records of shard ``shard`` (a shard outside the plan is refused)."""
    if shard_size < 1:
        raise ConfigError(f"shard size must be >= 1, got {shard_size}", fix="set a positive shard size")
    n = num_shards(len(images), shard_size)
    if not 0 <= shard < n:
        raise ConfigError(f"shard {shard} does not exist: {len(images)} images in shards of {shard_size} "
                          f"make {n} shards", fix="the Snakefile computes the shard count; rerun snakemake")
    return list(images[shard * shard_size:(shard + 1) * shard_size])


def write_shard_file(path: str | Path, *, stage: str, shard: int, shard_size: int,
                     images: Sequence[Mapping[str, Any]], params: Mapping[str, Any],
                     extra: Mapping[str, Any] | None = None) -> None:
    """The shard's declared output: its image ids and stage parameters (+ ``extra``, e.g. the
    edge-scoring counts), written after every per-image result."""
    write_json(path, {"format": SHARD_FORMAT, "stage": stage, "shard": int(shard), "shard_size": int(shard_size),
                      "images": [rec["id"] for rec in images], "params": dict(params), **dict(extra or {})},
               indent=None)


def read_shard_files(files: Sequence[str | Path], images: Sequence[Mapping[str, Any]], *,
                     stage: str) -> list[dict[str, Any]]:
    """The shard files of ``stage``, in shard order, checked to cover the manifest's ``images``
    exactly (same ids, same order) with one set of stage parameters."""
    fix = "rerun the workflow (snakemake): the shards and the data manifest are out of step"
    if not files:
        raise DataError(f"no {stage} shard file given", fix=fix)
    shards = []
    for f in files:
        data = read_json(f, what=f"{stage} shard file")
        if not isinstance(data, dict) or data.get("format") != SHARD_FORMAT or data.get("stage") != stage:
            raise DataError(f"not a {stage} shard file (format {SHARD_FORMAT})", path=f, fix=fix)
        shards.append((int(data["shard"]), Path(f), data))
    shards.sort(key=lambda s: s[0])
    got = [iid for _, _, d in shards for iid in d["images"]]
    want = [rec["id"] for rec in images]
    if got != want:
        first = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise DataError(f"the {len(shards)} {stage} shards hold {len(got)} images, the data manifest "
                        f"{len(want)}; they first differ at position {first}", path=shards[0][1], fix=fix)
    first_params = json.dumps(shards[0][2]["params"], sort_keys=True)
    for _, path, d in shards[1:]:
        if json.dumps(d["params"], sort_keys=True) != first_params:
            raise DataError(f"{stage} shard {d['shard']} was made with other parameters than shard "
                            f"{shards[0][2]['shard']}", path=path, fix=fix)
    return [d for _, _, d in shards]


def expected_num_images(data: Mapping[str, Any]) -> int:
    """Images the prepare stage will select: counted from the annotation file when it exists, else
    the dataset's published size (COCO 2017 val before its download), capped by ``max_images``."""
    inst = Path(data["root"]) / data["instances_json"]
    if inst.is_file():
        with open(inst, "rb") as fh:
            n = len(json.load(fh)["images"])
    elif data["dataset"] == "coco2017_val":
        from trace_edges.data.coco_urls import COCO2017_VAL_NUM_IMAGES

        n = COCO2017_VAL_NUM_IMAGES
    else:
        raise FileNotFoundError(f"{inst}: annotation file not found (needed to size the teacher's shards)")
    return min(n, data["max_images"]) if data.get("max_images") else n

"""Shard arithmetic shared by the Snakefile (job count) and the stages (which images a job takes)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping


def num_shards(n_images: int, shard_size: int) -> int:
    return max(1, math.ceil(n_images / shard_size))


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

"""The official COCO 2017 archives the paper preset (``data.dataset = coco2017_val``) needs.

Each entry matches the config schema (``$defs.data.properties.download.properties.archives``):
``{url, size, md5, sha256, extract_to}``; ``extract_to`` is relative to the dataset root.

Where the numbers come from (checked against public code, not against a fresh download):

* ``size`` and ``sha256``: TensorFlow Datasets' recorded checksums
  (``tensorflow/datasets``, ``tensorflow_datasets/url_checksums/coco.txt``), which lists
  ``<url> <size> <sha256>`` for every official COCO zip. The sizes agree with a ``wget`` log of
  ``val2017.zip`` ("Length: 815585330") and with several independent download scripts recording
  815585330 / 252907541 bytes; the panoptic size 860725834 agrees with a public listing of the
  fast.ai COCO mirror (``s3://fast-ai-coco/panoptic_annotations_trainval2017.zip``, size
  860725834). Note: a value of 860725835 that circulates for the panoptic zip is off by one; every
  source found records 860725834. The sha256 values of val2017.zip and
  annotations_trainval2017.zip also appear, with the same sizes, in independent run records.
* ``md5``: the values used by torchvision-style loaders, PaddleDetection, MLPerf download scripts
  and the COCO mirror checksum lists (``442b8da7...`` val2017, ``f4bbac64...`` annotations,
  ``4170db65...`` panoptic). No md5 is published on cocodataset.org itself (the S3 ETag of the
  multipart-uploaded image zips is not an md5), so these are "commonly recorded", not official.

The panoptic archive holds two inner zips, ``annotations/panoptic_{train,val}2017.zip``;
:data:`NESTED_ZIPS` names the one the val preset unpacks (its PNGs land in
``annotations/panoptic_val2017/``). The ~120k train PNGs are left zipped.
"""

from __future__ import annotations

from typing import Any

COCO2017_VAL_ARCHIVES: list[dict[str, Any]] = [
    {
        # 5000 val images -> <root>/val2017/*.jpg
        "url": "http://images.cocodataset.org/zips/val2017.zip",
        "size": 815585330,
        "md5": "442b8da7639aecaf257c1dceb8ba8c80",
        "sha256": "4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05",
        "extract_to": ".",
    },
    {
        # instances/captions/person_keypoints train+val -> <root>/annotations/*.json
        "url": "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
        "size": 252907541,
        "md5": "f4bbac642086de4f52a3fdda2de5fa2c",
        "sha256": "113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268",
        "extract_to": ".",
    },
    {
        # panoptic_{train,val}2017.json + inner zips -> <root>/annotations/
        "url": "http://images.cocodataset.org/annotations/panoptic_annotations_trainval2017.zip",
        "size": 860725834,
        "md5": "4170db65fc022c9c296af880dbca6055",
        "sha256": "c05f76d2129b6b561eb70efe16e7006df62f73fb92889132d373b9d90e31a370",
        "extract_to": ".",
    },
]

#: archive file name -> inner zip members to unpack (next to themselves) after extraction.
NESTED_ZIPS: dict[str, tuple[str, ...]] = {
    "panoptic_annotations_trainval2017.zip": ("annotations/panoptic_val2017.zip",),
}

#: images in COCO 2017 val (instances_val2017.json); lets the Snakefile size the teacher's shards
#: before the annotations are downloaded.
COCO2017_VAL_NUM_IMAGES = 5000

"""Shared fixtures. Tests read only the project's own files (data/coco_mini), never ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COCO_MINI = ROOT / "data" / "coco_mini"

os.environ.setdefault("TRACE_EDGES_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    return COCO_MINI

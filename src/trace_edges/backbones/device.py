"""Config device and dtype names -> torch objects (shared by the backbone loader and the
null-prompt stage, which must not import each other)."""

from __future__ import annotations

import torch

#: config dtype names -> torch dtypes
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; any other name as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


__all__ = ["DTYPES", "resolve_device"]

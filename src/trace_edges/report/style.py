"""One matplotlib style for every figure (readable at paper column width)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RC = {
    "font.size": 7,
    "axes.titlesize": 7,
    "axes.labelsize": 7,
    "xtick.labelsize": 6,
    "ytick.labelsize": 6,
    "legend.fontsize": 6,
    "figure.dpi": 150,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42,
    # deterministic PDFs/PNGs: no creation dates in the metadata
    "svg.hashsalt": "trace-edges",
}


def apply() -> None:
    plt.rcParams.update(RC)


def save(fig, path_png, path_pdf=None, *, dpi: int = 150) -> None:
    """Save PNG (+ PDF) atomically, without timestamps in the metadata."""
    from trace_edges.io import atomic_path

    with atomic_path(path_png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    if path_pdf is not None:
        with atomic_path(path_pdf) as tmp:
            fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "ModDate": None, "Producer": None,
                                                     "Creator": None})
    plt.close(fig)

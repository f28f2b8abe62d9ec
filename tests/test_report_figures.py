"""The qualitative figure: column titles never overlap, ORACLE sources are labelled."""

from __future__ import annotations

import numpy as np
import pytest

from trace_edges.report.figures import column_title, qualitative_grid, title_extents

#: the default config's edge sources, and the result sets the figure draws ('none' = no BGP)
SOURCES = ["sobel", "canny", "hed", "oracle_gt", "trace_teacher", "trace_student"]


def _overlaps(extents):
    """Pairs of neighbouring titles whose horizontal extents intersect (display pixels)."""
    return [(i, i + 1) for i, ((_, a1), (b0, _)) in enumerate(zip(extents, extents[1:])) if a1 > b0]


def _grid(cols, shape=(640, 427)):
    """Two rows of portrait panels (COCO's narrowest images: the axes are narrowest there)."""
    import matplotlib.pyplot as plt

    panels = [[np.zeros(shape, np.float32) for _ in cols] for _ in range(2)]
    fig = qualitative_grid(panels, cols, ["1", "2"])
    return fig, plt


def test_titles_are_wrapped_and_oracle_is_labelled():
    assert column_title("edges", "canny") == "edges:\ncanny"
    assert column_title("masks", "oracle_gt") == "masks:\noracle_gt\n(ORACLE)"


@pytest.mark.parametrize("shape", [(640, 427), (427, 640)])
def test_column_titles_never_overlap(shape):
    cols = ["image", "GT\ninstance edges"] + [column_title("edges", s) for s in SOURCES] + \
        [column_title("masks", s) for s in ["none", *SOURCES]]
    fig, plt = _grid(cols, shape)
    try:
        extents = title_extents(fig, fig.axes[: len(cols)])
        assert len(extents) == len(cols) and not _overlaps(extents), extents
        assert [ax.get_title() for ax in fig.axes[: len(cols)]] == cols
    finally:
        plt.close(fig)


def test_the_check_sees_overlapping_titles():
    """The one-line titles of the old layout ("edges: trace_teacher") at a fixed width DO overlap:
    the check above can fail."""
    import matplotlib.pyplot as plt

    from trace_edges.report import style

    style.apply()
    cols = [f"edges: {s}" for s in SOURCES]
    fig, axes = plt.subplots(1, len(cols), figsize=(1.1 * len(cols), 0.9), squeeze=False)
    try:
        for ax, title in zip(axes[0], cols):
            ax.imshow(np.zeros((640, 427)))
            ax.set_title(title)
        assert _overlaps(title_extents(fig, axes[0]))
    finally:
        plt.close(fig)


def test_a_long_source_name_widens_the_figure_instead_of_overlapping():
    cols = [column_title("edges", "a_very_long_edge_source_name_of_a_user")] * 4
    fig, plt = _grid(cols)
    try:
        assert fig.get_size_inches()[0] > 1.1 * len(cols)
        assert not _overlaps(title_extents(fig, fig.axes[: len(cols)]))
    finally:
        plt.close(fig)


def test_results_table_labels_the_oracle_row():
    import pandas as pd

    from trace_edges.report.tables import to_markdown

    table = pd.DataFrame({"AP": [0.01, 0.02, 0.2], "ODS": [None, 0.5, 1.0]},
                         index=pd.Index(["none", "hed", "oracle_gt"], name="edge_source"))
    md = to_markdown(table, title="t", notes=[])
    assert "| oracle_gt (ORACLE) | 20.0 | 100.0 |" in md and "| hed | 2.0 | 50.0 |" in md
    assert "upper bound" in md and md.count("(ORACLE)") == 2      # the row and the note
    assert "(ORACLE)" not in to_markdown(table.drop(index="oracle_gt"), title="t", notes=[])

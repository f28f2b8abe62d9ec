"""One registry per kind: backbone families, edge sources, proposal methods.

The schema must stay a literal YAML file (Snakemake validates the config against it directly),
so it repeats each registry's names as an enum; these tests keep the two equal, and check that
every registry entry resolves to what it names (without building or running anything).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from trace_edges import edges as edges_registry
from trace_edges.config import SCHEMA_PATH, _load_schema
from trace_edges.families import DIFFUSION_FAMILIES, ENCODER_FAMILIES, FAMILIES, family, tiny_marker
from trace_edges.proposals import PROPOSERS, get_proposer
from trace_edges.registry import resolve

#: registry -> (its names, where the schema lists them)
REGISTRIES = {
    "backbone families": (lambda: list(FAMILIES),
                          ("teacher", "properties", "backbone", "properties", "family", "enum")),
    "edge sources": (lambda: list(edges_registry._REGISTRY),
                     ("edges", "properties", "sources", "items", "enum")),
    "proposal methods": (lambda: list(PROPOSERS),
                         ("proposals", "properties", "method", "enum")),
}


def _schema_enum(path: tuple[str, ...]) -> list:
    node = _load_schema()["$defs"]
    for key in path:
        node = node[key]
    return node


@pytest.mark.parametrize("kind", REGISTRIES)
def test_schema_enum_equals_registry(kind):
    names, path = REGISTRIES[kind]
    enum = _schema_enum(path)
    assert len(enum) == len(set(enum)), f"{SCHEMA_PATH}: duplicate {kind} in the enum"
    assert sorted(enum) == sorted(names()), (
        f"{SCHEMA_PATH} `{'.'.join(path)}` and the {kind} registry differ: "
        f"only in the schema {sorted(set(enum) - set(names()))}, only in the registry "
        f"{sorted(set(names()) - set(enum))}")


# ------------------------------------------------------------------------------- backbone families
@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_record_resolves(name):
    from trace_edges.backbones import backbone_class
    from trace_edges.backbones.base import Backbone
    from trace_edges.backbones.tiny import tiny_builder

    rec = family(name)
    assert rec.name == name and rec.kind in ("diffusion", "encoder")
    assert callable(tiny_builder(name))  # resolves; builds nothing
    cls = backbone_class(name)
    assert cls.family == name
    if rec.kind == "diffusion":  # an encoder adapter (DINOv2) has no trajectory: not a Backbone
        assert issubclass(cls, Backbone)
    # a diffusers pipeline has model_index.json, a transformers model config.json
    assert tiny_marker(name) == ("model_index.json" if rec.kind == "diffusion" else "config.json")


def test_family_kinds_partition_the_registry():
    assert set(DIFFUSION_FAMILIES).isdisjoint(ENCODER_FAMILIES)
    assert [f for f in FAMILIES if f in DIFFUSION_FAMILIES + ENCODER_FAMILIES] == list(FAMILIES)


def test_unknown_family_is_a_config_error():
    from trace_edges.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown backbone family"):
        tiny_marker("sd2")


def test_families_and_staged_sources_import_without_torch():
    """The Snakefile reads both at parse time: they must not pull in torch or diffusers."""
    code = ("import sys; import trace_edges.families, trace_edges.edges; "
            "from trace_edges.edges import staged_sources; staged_sources(); "
            "sys.exit(int(any(m in sys.modules for m in ('torch', 'diffusers', 'transformers'))))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ------------------------------------------------------------------------------- edge sources
@pytest.mark.parametrize("name", list(edges_registry._REGISTRY))
def test_edge_source_resolves_to_its_name(name):
    from trace_edges.edges.base import EdgeSource

    cls = edges_registry._resolve(name)
    assert issubclass(cls, EdgeSource) and cls.name == name


def test_staged_sources_come_from_the_registry():
    staged = edges_registry.staged_sources()
    assert staged and staged <= set(edges_registry.available_sources())
    assert staged == {n for n, e in edges_registry._REGISTRY.items() if e.staged}


# ------------------------------------------------------------------------------- proposal methods
@pytest.mark.parametrize("method", list(PROPOSERS))
def test_proposer_resolves(method):
    assert callable(get_proposer(method))
    assert callable(resolve(PROPOSERS[method].plan))


# ------------------------------------------------------------------------------- CLI choices
def _subparser(command: str):
    from trace_edges.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[command]


def _choices(command: str, dest: str):
    return next(a for a in _subparser(command)._actions if a.dest == dest).choices


def test_cli_choices_come_from_the_registries():
    assert list(_choices("build-tiny", "family")) == list(FAMILIES)
    assert list(_choices("edges", "source")) == edges_registry.available_sources()

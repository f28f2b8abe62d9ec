"""Each stage's code set is derived (trace_edges.code_deps), never hand-kept: it holds everything the
stage imports, the Snakemake rules declare it as input, and a new import is picked up by itself."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import trace_edges
from trace_edges import code_deps, provenance

from workflow_helpers import make_snapshot, snakemake

SRC = Path(trace_edges.__file__).resolve().parents[1]
STAGES = tuple(code_deps.STAGE_ENTRIES)


def test_every_rule_code_set_is_a_stage_and_every_stage_is_used():
    """The rules' ``code("<stage>")`` names and code_deps.STAGE_ENTRIES are the same set."""
    import re

    used = set()
    for smk in [SRC.parent / "Snakefile", *sorted((SRC.parent / "rules").glob("*.smk"))]:
        used |= set(re.findall(r'\bcode\("(\w+)"\)', smk.read_text()))
    assert used == set(STAGES)

_LOADED = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items())
                        if (n == "trace_edges" or n.startswith("trace_edges.")) and getattr(m, "__file__", None))))
"""


def loaded_files(modules) -> set[Path]:
    """Files of the trace_edges modules a fresh interpreter holds after importing ``modules``."""
    out = subprocess.run([sys.executable, "-c", _LOADED, *modules], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, timeout=300)
    return {Path(p).resolve() for p in json.loads(out.stdout)}


def entry_modules(stage: str) -> list[str]:
    # __main__ would run the CLI on import; it only imports trace_edges.cli, which is an entry too
    names = [e.partition(":")[0] for e in (*code_deps.CLI_ENTRIES, *code_deps.STAGE_ENTRIES[stage])]
    return [f"trace_edges.{n}" for n in names if n != "__main__"]


def test_every_stage_has_entries():
    assert tuple(provenance.STAGES) == STAGES
    for stage in STAGES:
        files = provenance.stage_sources(stage)
        assert files == sorted(files) and all(p.is_file() for p in files)
        assert code_deps.PACKAGE_DIR / "cli.py" in files and code_deps.PACKAGE_DIR / "__main__.py" in files


@pytest.mark.parametrize("stage", STAGES)
def test_imports_of_the_entry_modules_are_declared(stage):
    declared = set(provenance.stage_sources(stage))
    loaded = loaded_files(entry_modules(stage))
    assert loaded - declared == set(), f"{stage}: imported but not in its code set"


def test_imports_of_the_whole_closure_are_declared():
    """Stronger: importing every module of the bgp stage's closure (nothing heavy) loads nothing else."""
    modules = sorted(code_deps.stage_modules("bgp") - {"trace_edges.__main__"})
    assert loaded_files(modules) - set(provenance.stage_sources("bgp")) == set()


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_imports_of_every_closure_module_are_declared(stage):
    modules = sorted(code_deps.stage_modules(stage) - {"trace_edges.__main__"})
    assert loaded_files(modules) - set(provenance.stage_sources(stage)) == set()


def test_prepare_depends_on_the_edge_gt_code():
    files = {p.relative_to(code_deps.PACKAGE_DIR).as_posix() for p in provenance.stage_sources("prepare")}
    assert {"metrics/thin.py", "metrics/edges.py", "metrics/instances.py", "panoptic_io.py", "data/edge_gt.py",
            "schemas/config.schema.yaml"} <= files
    # and not the code of later stages
    assert not any(f.startswith(("bgp/", "teacher/", "student/", "backbones/")) for f in files)


def test_lazy_registrations_are_followed():
    teacher = {p.relative_to(code_deps.PACKAGE_DIR).as_posix() for p in provenance.stage_sources("teacher")}
    assert {"backbones/sd3.py", "backbones/flux.py", "backbones/dinov2.py"} <= teacher  # backbones.FAMILIES
    edges = {p.relative_to(code_deps.PACKAGE_DIR).as_posix() for p in provenance.stage_sources("edges")}
    assert {"edges/gradient.py", "teacher/source.py", "student/source.py"} <= edges  # edges._REGISTRY
    props = {p.relative_to(code_deps.PACKAGE_DIR).as_posix() for p in provenance.stage_sources("proposals")}
    assert {"proposals/felzenszwalb.py", "proposals/maskcut.py", "proposals/external.py"} <= props  # PROPOSERS


def test_function_entries_are_narrow():
    """A subcommand module that serves several stages: each stage gets the function it runs."""
    tiny = {p.relative_to(code_deps.PACKAGE_DIR).as_posix() for p in provenance.stage_sources("build_tiny")}
    assert "backbones/tiny.py" in tiny and "stages/teacher.py" not in tiny
    vit = {p.relative_to(code_deps.PACKAGE_DIR).as_posix() for p in provenance.stage_sources("build_tiny_vit")}
    assert "proposals/vit.py" in vit and "stages/proposals.py" not in vit
    bgp_fig = {p.relative_to(code_deps.PACKAGE_DIR).as_posix() for p in provenance.stage_sources("bgp_figure")}
    assert "report/bgp_figure.py" in bgp_fig and "report/tables.py" not in bgp_fig


def test_package_data_is_declared():
    """Every non-Python file of the package is a declared data file of the module that reads it, so
    a new data file cannot be left out of the stages that use it."""
    data = {p.relative_to(code_deps.PACKAGE_DIR).as_posix() for p in code_deps.PACKAGE_DIR.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    declared = {f for files in code_deps.PACKAGE_DATA.values() for f in files}
    assert data == declared
    assert code_deps.PACKAGE_DIR / "report/paper_numbers.yaml" in provenance.stage_sources("report_paper_vs_ours")


def test_code_digest_follows_the_sources():
    assert provenance.code_digest("prepare") != provenance.code_digest("bgp")
    assert len(provenance.code_digest("audit")) == 64


def test_closure_of_a_synthetic_package(tmp_path, monkeypatch):
    """Relative, lazy and submodule imports, registrations, and parent packages (only their top level)."""
    pkg = tmp_path / "trace_edges"
    files = {
        "__init__.py": "",
        "a/__init__.py": "from .b import X\nfrom trace_edges.registry import resolve\nREG = {'c': 'trace_edges.c:C'}\n"
                         "def lazy():\n    from trace_edges import d\n",
        "registry.py": "",
        # reads a registry's names but cannot resolve them (no resolver import): not an edge to c
        "names.py": "from trace_edges.a import b\nNAMES = {'c': 'trace_edges.c:C'}\n",
        "a/b.py": "X = 1\n",
        "c.py": "def f():\n    from trace_edges.a import b\n",
        "d.py": "",
        "e/__init__.py": "def g():\n    import trace_edges.d\n",
        "e/f.py": "from . import g\nfrom trace_edges.a.b import X\n",
        "e/g.py": "",
        "h.py": "def run():\n    from trace_edges import c\n    helper()\n\n"
                "def helper():\n    from trace_edges.e import f\n\n"
                "def other():\n    from trace_edges import d\n",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    monkeypatch.setattr(code_deps, "PACKAGE_DIR", pkg)
    monkeypatch.setattr(code_deps, "CACHE_PATH", pkg / "__pycache__" / "code_deps.json")
    for fn in (code_deps.module_files, code_deps._source, code_deps._tree, code_deps._edges):
        fn.cache_clear()
    try:
        assert code_deps.closure(["c"]) == {"trace_edges", "trace_edges.c", "trace_edges.a", "trace_edges.a.b",
                                            "trace_edges.registry"}
        assert "trace_edges.c" not in code_deps.closure(["names"])
        # a parent package reached by `import trace_edges.e.f` runs only its top level: not e.g()'s import
        assert code_deps.closure(["e.f"]) == {"trace_edges", "trace_edges.e", "trace_edges.e.f", "trace_edges.e.g",
                                              "trace_edges.a", "trace_edges.a.b", "trace_edges.registry"}
        # ``import a.b`` binds ``a``: its functions can be called, so it counts by name
        (pkg / "e/f.py").write_text("import trace_edges.a.b\n")
        code_deps._source.cache_clear(), code_deps._tree.cache_clear(), code_deps._edges.cache_clear()
        assert {"trace_edges.c", "trace_edges.d"} <= code_deps.closure(["e.f"])
        (pkg / "e/f.py").write_text(files["e/f.py"])
        code_deps._source.cache_clear(), code_deps._tree.cache_clear(), code_deps._edges.cache_clear()
        # imported by name, a package's lazy imports and registrations count
        assert code_deps.closure(["a"]) >= {"trace_edges.c", "trace_edges.d"}
        # a function entry: its imports and its helpers', not those of the module's other functions
        assert "trace_edges.d" not in code_deps.closure(["h:run"])
        assert {"trace_edges.c", "trace_edges.e.f"} <= code_deps.closure(["h:run"])
        assert code_deps.find_cycle() is None
        (pkg / "d.py").write_text("from trace_edges.a import lazy\n")  # a -> d (lazily) -> a
        code_deps._source.cache_clear(), code_deps._tree.cache_clear(), code_deps._edges.cache_clear()
        assert code_deps.find_cycle() == ["trace_edges.a", "trace_edges.d", "trace_edges.a"]
    finally:
        for fn in (code_deps.module_files, code_deps._source, code_deps._tree, code_deps._edges):
            fn.cache_clear()


def _rule_inputs(filegraph: str, rule: str) -> list[str]:
    """The inputs of ``rule`` in ``snakemake --filegraph`` output (a DOT table per rule)."""
    m = re.search(rf'<font point-size="18">{re.escape(rule)}</font>(.*?)output &rarr;', filegraph, re.S)
    assert m, f"rule {rule} not in the file graph"
    return [html.unescape(s) for s in re.findall(r'<font face="monospace">(.*?)</font>', m.group(1))]


def test_snakemake_prepare_rule_takes_the_derived_code(tmp_path):
    """In a copy of the project, Snakemake's DAG gives rule prepare metrics/thin.py as input, and a new
    module imported (lazily) by thin.py becomes an input too, without touching any table."""
    wd = make_snapshot(tmp_path / "proj")
    args = ["--forceall", "--filegraph", "--cores", "1", "results/embedded/data/manifest.json"]
    inputs = _rule_inputs(snakemake(args, wd).stdout, "prepare")
    assert "src/trace_edges/metrics/thin.py" in inputs
    assert "src/trace_edges/metrics/helper_new.py" not in inputs
    (wd / "src/trace_edges/metrics/helper_new.py").write_text("K = 1\n")
    thin = wd / "src/trace_edges/metrics/thin.py"
    thin.write_text(thin.read_text() + "\n\ndef _new():\n    from trace_edges.metrics import helper_new\n"
                    "    return helper_new.K\n")
    inputs = _rule_inputs(snakemake(args, wd).stdout, "prepare")
    assert "src/trace_edges/metrics/helper_new.py" in inputs

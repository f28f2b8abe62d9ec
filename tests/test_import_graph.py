"""The package's static import graph (every import, top level or lazy, and the lazy
"trace_edges.x:Name" registrations) has no cycle: each module can be understood, tested and
imported without the modules that use it."""

from __future__ import annotations

from trace_edges import code_deps


def test_no_import_cycle():
    cycle = code_deps.find_cycle()
    assert cycle is None, "import cycle in src/trace_edges: " + " -> ".join(cycle)


def test_graph_covers_every_module_and_lazy_import():
    graph = code_deps.graph()
    assert set(graph) == set(code_deps.module_files())
    # lazy (function-level) imports and registrations are edges too
    assert "trace_edges.stages.student" in graph["trace_edges.commands.student"]
    assert "trace_edges.backbones.sd3" in graph["trace_edges.backbones"]
    assert "trace_edges.student.source" in graph["trace_edges.edges"]
    # the CLI imports the subcommand modules by name only
    assert not any(m.startswith("trace_edges.commands") for m in graph["trace_edges.cli"])
    assert not any("trace_edges.cli" in graph[m] for m in graph if m.startswith("trace_edges.commands"))


def test_find_cycle_reports_the_modules():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert code_deps.find_cycle(g) == ["a", "b", "c", "a"]
    assert code_deps.find_cycle({"a": {"b"}, "b": set()}) is None

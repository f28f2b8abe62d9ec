"""The package's import graph, found statically, and each stage's code set derived from it.

A stage's code set is the import closure, within ``trace_edges``, of the module(s) it runs
(:data:`STAGE_ENTRIES`, the only hand-kept table), found by parsing the source (``ast``), never by
importing it. An edge ``a -> b`` exists when module ``a``

* imports ``b`` anywhere: at top level or inside a function (lazy imports), absolute or relative,
  including ``from trace_edges.x import y`` where ``y`` is the submodule ``trace_edges.x.y``;
* can resolve a registration of ``b``: a string constant that is exactly ``"trace_edges.b"`` or
  ``"trace_edges.b:Name"`` (lazy registrations: ``edges._REGISTRY``, ``proposals.PROPOSERS``,
  ``families.FAMILIES``), held by ``a`` itself or by a module ``a`` imports, when ``a`` imports the
  resolver :mod:`trace_edges.registry`. A module that only reads a registry's names (``config``
  reads ``families.ENCODER_FAMILIES``) cannot import its implementations, so it does not depend on
  them; a stage that can resolve a registry depends on every implementation registered there
  (the choice is made by the config at run time: an over-approximation, never a miss).

Importing a module runs its parent packages' ``__init__.py``, so they belong to the closure too,
with their top-level imports (a package reached only that way cannot have its functions called,
so its lazy imports and registrations are not followed; see :func:`closure`). Not an edge:
``trace_edges.cli`` importing the subcommand modules by bare name
(``COMMAND_MODULES`` via importlib): every job imports them only to register its arguments, and a
stage's own subcommand module is its entry, so the closure holds the code it really runs.

An entry ``"module:function"`` narrows a module that hosts several subcommands to the one a stage
runs: the module's top-level imports plus the imports inside that function and inside the
module-level functions it refers to (transitively). Package data files read at run time are
declared per reading module in :data:`PACKAGE_DATA`; a test checks that every non-``.py`` file of
the package is declared there, so a new data file cannot be silently left out.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterable

PACKAGE = "trace_edges"
PACKAGE_DIR = Path(__file__).resolve().parent

#: modules every job runs (``python -m trace_edges <subcommand>``). Module names in these tables
#: are relative to the package, so they are not read as registrations of this module.
CLI_ENTRIES = ("__main__", "cli")

#: stage -> the module(s) (or ``module:function``) that stage runs, besides :data:`CLI_ENTRIES`.
STAGE_ENTRIES: dict[str, tuple[str, ...]] = {
    "prepare": ("commands.prepare",),
    "download": ("commands.download",),
    "edges": ("commands.edges",),
    # the HED weights (rule fetch_hed): its output is a record, so a rerun re-verifies, never re-fetches
    "fetch_hed": ("commands.hed",),
    "proposals": ("commands.proposals:run",),
    "bgp": ("commands.bgp",),
    "wps": ("commands.wps",),
    "score": ("commands.score",),
    # trajectory, iep, teacher-labels (not build-tiny: build_tiny below)
    "teacher": ("commands.teacher:run_trajectory", "commands.teacher:run_iep", "commands.teacher:run_labels"),
    "audit": ("commands.audit",),
    # distill, student-infer, and the student-figure strip (rules/student.smk)
    "student": ("commands.student", "commands.report:run_student_figure"),
    # one seeded build per family: not the whole teacher stage, so teacher edits do not rebuild them
    "build_tiny": ("commands.teacher:run_build_tiny",),
    "build_tiny_vit": ("commands.proposals:run_build_tiny_vit",),
    "teacher_figures": ("commands.teacher_figures",),
    "bgp_figure": ("commands.report:run_bgp_figure",),
    # the report rules, one subcommand each (commands/report.py hosts them all)
    "report_tables": ("commands.report:run_tables",),
    "report_figure": ("commands.report:run_figure",),
    "report_speed": ("commands.report:run_speed",),
    "report_ablations": ("commands.report:run_ablations",),
    "report_paper_vs_ours": ("commands.report:run_paper_vs_ours",),
}

#: module -> package data files (relative to the package directory) it reads at run time
PACKAGE_DATA: dict[str, tuple[str, ...]] = {
    "config": ("schemas/config.schema.yaml",),
    "report.paper_vs_ours": ("report/paper_numbers.yaml",),
}

#: a string literal that is exactly a package module path, optionally ``:Name`` (group 1: the module)
_REGISTRATION = re.compile(rf"""(?<![\w.])["']({PACKAGE}(?:\.\w+)+)(?::\w+)?["']""")


# ----------------------------------------------------------------------------------- modules


@functools.lru_cache(maxsize=1)
def module_files() -> dict[str, Path]:
    """Every module of the package: dotted name -> source file (packages -> ``__init__.py``)."""
    out: dict[str, Path] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR).with_suffix("")
        parts = [PACKAGE, *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        if all(p.isidentifier() for p in parts):
            out[".".join(parts)] = path
    return out


def _is_package(module: str) -> bool:
    return module_files()[module].name == "__init__.py"


def parents(module: str) -> list[str]:
    """``trace_edges.a.b`` -> ``["trace_edges", "trace_edges.a"]``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


# ----------------------------------------------------------------------------------- imports


@functools.lru_cache(maxsize=None)
def _source(module: str) -> str:
    return module_files()[module].read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _tree(module: str) -> ast.Module:
    return ast.parse(_source(module), filename=str(module_files()[module]))


_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _statements(body: Iterable[ast.stmt], *, functions: bool = True) -> Iterable[ast.stmt]:
    """Every statement in ``body``, nested ones included (import statements are statements, so
    expressions need not be walked: much faster than ``ast.walk``); ``functions=False`` skips the
    bodies of functions (what runs on import; class bodies do run)."""
    for stmt in body:
        yield stmt
        if not functions and isinstance(stmt, _FUNCS):
            continue
        for field in ("body", "orelse", "finalbody"):
            yield from _statements(getattr(stmt, field, ()), functions=functions)
        for sub in (*getattr(stmt, "handlers", ()), *getattr(stmt, "cases", ())):
            yield from _statements(sub.body, functions=functions)


def _resolve_from(module: str, node: ast.ImportFrom) -> str | None:
    if not node.level:
        return node.module
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _import_targets(module: str, stmts: Iterable[ast.stmt]) -> set[str]:
    """Package modules named by the import statements among ``stmts``."""
    known = module_files()
    found: set[str] = set()
    for node in stmts:
        if isinstance(node, ast.Import):
            for alias in node.names:
                # ``import a.b.c`` imports a, a.b and a.b.c
                found.update(m for m in (*parents(alias.name), alias.name) if m in known)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, node)
            if base is None:
                continue
            subs = {f"{base}.{alias.name}" for alias in node.names} & known.keys()
            found.update(subs)  # ``from trace_edges.x import y`` with y a submodule
            if base in known and len(subs) < len(node.names):
                # something of the package itself is bound; when only submodules are, the package
                # runs only as their parent
                found.add(base)
    found.discard(module)
    return found


def _registration_targets(module: str, text: str) -> set[str]:
    """Package modules named by string literals ``"trace_edges.a.b"`` / ``"trace_edges.a.b:Name"``."""
    known = module_files()
    return {m for m in _REGISTRATION.findall(text) if m in known and m != module}


RESOLVER = f"{PACKAGE}.registry"


def _analyse(module: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    body = _tree(module).body
    return (frozenset(_import_targets(module, _statements(body))),
            frozenset(_import_targets(module, _statements(body, functions=False))),
            frozenset(_registration_targets(module, _source(module))))


def _with_registrations(module: str, found: set[str] | frozenset[str], own: Iterable[str]) -> set[str]:
    """``found`` (imports) plus the registrations ``module`` can resolve: its own (``own``) and
    those of the modules it imports, when it imports the resolver."""
    out = set(found)
    if RESOLVER in out:
        out.update(own)
        for m in found:
            out.update(registrations(m))
    out.discard(module)
    return out


#: parsing every module costs ~0.3 s; the Snakefile asks at every parse, so the edges are cached
#: (keyed by each file's content, the module list and this file's own code) next to the bytecode
CACHE_PATH = PACKAGE_DIR / "__pycache__" / "code_deps.json"


@functools.lru_cache(maxsize=1)
def _edges() -> dict[str, tuple[frozenset[str], frozenset[str], frozenset[str]]]:
    """module -> (every import, top-level imports, registration strings), from the cache where valid."""
    known = module_files()
    header = hashlib.sha256("\n".join([*known, Path(__file__).read_text(encoding="utf-8")]).encode()).hexdigest()
    try:
        cached = json.loads(CACHE_PATH.read_text(encoding="utf-8"))
        entries = cached["modules"] if cached.get("header") == header else {}
    except (OSError, ValueError, KeyError, TypeError):
        entries = {}
    out: dict[str, tuple[frozenset[str], frozenset[str], frozenset[str]]] = {}
    fresh: dict[str, dict] = {}
    for module in known:
        digest = hashlib.sha256(_source(module).encode()).hexdigest()
        entry = entries.get(module)
        if not (isinstance(entry, dict) and entry.get("sha256") == digest):
            every, top, regs = _analyse(module)
            entry = {"sha256": digest, "imports": sorted(every), "top_level": sorted(top),
                     "registrations": sorted(regs)}
        fresh[module] = entry
        out[module] = (frozenset(entry["imports"]), frozenset(entry["top_level"]), frozenset(entry["registrations"]))
    if fresh != entries:
        try:
            CACHE_PATH.parent.mkdir(exist_ok=True)
            tmp = CACHE_PATH.with_name(f"{CACHE_PATH.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"header": header, "modules": fresh}, sort_keys=True), encoding="utf-8")
            os.replace(tmp, CACHE_PATH)
        except OSError:  # read-only checkout: analyse again next time
            pass
    return out


def registrations(module: str) -> frozenset[str]:
    """Package modules named by registration strings in ``module``'s source."""
    return _edges()[module][2]


def imports(module: str) -> frozenset[str]:
    """Package modules ``module`` can run: its imports at top level or inside functions, and the
    registrations it can resolve (see the module docstring)."""
    return frozenset(_with_registrations(module, _edges()[module][0], registrations(module)))


def top_level_imports(module: str) -> frozenset[str]:
    """Package modules ``module`` imports when it is imported (no lazy imports, no registrations)."""
    return _edges()[module][1]


def _function_imports(module: str, function: str) -> set[str]:
    """What ``module`` names outside its module-level functions, plus inside ``function`` and the
    module-level functions it refers to, transitively."""
    tree = _tree(module)
    defs = {n.name: n for n in tree.body if isinstance(n, _FUNCS)}
    if function not in defs:
        raise KeyError(f"{module} has no module-level function {function!r}")
    selected: set[str] = set()
    todo = [function]
    while todo:
        name = todo.pop()
        if name not in selected:
            selected.add(name)
            todo.extend(n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name) and n.id in defs)
    stmts = [s for s in _statements(tree.body, functions=False)]
    lines = _source(module).splitlines(keepends=True)
    skipped: set[int] = set()
    for name, node in defs.items():
        if name in selected:
            stmts.extend(_statements(node.body))
        else:
            skipped.update(range(node.lineno - 1 - len(node.decorator_list), node.end_lineno))
    text = "".join(line for i, line in enumerate(lines) if i not in skipped)
    return _with_registrations(module, _import_targets(module, stmts), _registration_targets(module, text))


# ----------------------------------------------------------------------------------- closures


def graph() -> dict[str, frozenset[str]]:
    """The package's static import graph (explicit and lazy imports, registrations); implicit
    parent-package imports are left out (a package importing its own submodule is no cycle)."""
    return {m: imports(m) for m in module_files()}


def closure(entries: Iterable[str]) -> set[str]:
    """Modules run by importing ``entries`` (``"module"`` or ``"module:function"``) and calling
    whatever they import.

    A module imported by name may have any of its code called, so all its imports count (lazy ones
    and registrations too). A parent package that is only imported implicitly (``import a.b`` runs
    ``a/__init__.py``) only runs its top level: its functions can be called only by a module that
    imports it by name, which is an edge of its own.
    """
    known = module_files()
    full: set[str] = set()   # imported by name: everything it imports, lazily or not
    init: set[str] = set()   # imported only as a parent package: its top-level imports
    todo: list[tuple[str, bool]] = []
    for entry in entries:
        module, _, function = entry.partition(":")
        module = _absolute(module)
        if module not in known:
            raise KeyError(f"no module {module!r} in {PACKAGE_DIR}")
        init.add(module)
        todo.extend((m, False) for m in parents(module))
        todo.extend((m, True) for m in (_function_imports(module, function) if function else imports(module)))
    while todo:
        m, by_name = todo.pop()
        if m in full or (m in init and not by_name):
            continue
        (full if by_name else init).add(m)
        todo.extend((p, False) for p in parents(m))
        todo.extend((t, True) for t in (imports(m) if by_name else top_level_imports(m)))
    return full | init


def _absolute(module: str) -> str:
    return module if module == PACKAGE or module.startswith(PACKAGE + ".") else f"{PACKAGE}.{module}"


def files_of(modules: Iterable[str]) -> set[Path]:
    """Source files of ``modules`` plus the package data files they read."""
    known = module_files()
    out: set[Path] = set()
    for m in modules:
        out.add(known[m])
        out.update(PACKAGE_DIR / rel for rel in PACKAGE_DATA.get(m.removeprefix(PACKAGE + "."), ()))
    return out


@functools.lru_cache(maxsize=None)
def stage_modules(stage: str) -> frozenset[str]:
    """Dotted names of the package modules ``stage`` runs."""
    if stage not in STAGE_ENTRIES:
        raise KeyError(f"unknown stage {stage!r}; known: {sorted(STAGE_ENTRIES)}")
    return frozenset(closure((*CLI_ENTRIES, *STAGE_ENTRIES[stage])))


@functools.lru_cache(maxsize=None)
def stage_files(stage: str) -> tuple[Path, ...]:
    """Absolute paths of the files (sources + package data) ``stage`` depends on, sorted."""
    return tuple(sorted(files_of(stage_modules(stage))))


def find_cycle(g: dict[str, Iterable[str]] | None = None) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` in ``g`` (default: :func:`graph`), or None."""
    g = graph() if g is None else g
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                cyc = visit(n)
                if cyc:
                    return cyc
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            cyc = visit(m)
            if cyc:
                return cyc
    return None

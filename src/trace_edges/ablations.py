"""The ablation grids (config block ``ablations``) expanded into cells and shared variants.

A *cell* is one row of one of the paper's ablation tables (grid ``divergence``, cell ``jsd``).
Its *variant* is what has to be computed for it: a teacher with its effective parameters, a
student with its effective parameters, or ``none`` (the base proposals alone). Variants are named
by a digest of their effective parameters, so two cells that mean the same computation (the
default teacher appears in several grids) share one set of artifacts, and changing one cell's
parameter changes only that cell's variant: Snakemake reruns exactly its jobs.

Pure functions, used by ``rules/ablations.smk`` at parse time and by the table builder.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from trace_edges.config import deep_merge, result_block, validate
from trace_edges.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Cell:
    grid: str
    cell: str
    paper: str
    edges: str            # none | teacher | student
    variant: str          # 'none', 't_<family>_<digest>' or 's_<digest>' / 'main'


@dataclass
class Expansion:
    cells: list[Cell]
    teachers: dict[str, dict[str, Any]]   # variant -> effective teacher block
    students: dict[str, dict[str, Any]]   # variant -> effective student block ('main' = the run's own)


#: every variant name teacher_variant / student_variant can make ('main' and 'none' aside)
VARIANT_NAME = re.compile(r"^(?:t_[A-Za-z0-9]+_|s_)[0-9a-f]{8}$")


def digest(obj: Any, n: int = 8) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def teacher_variant(teacher: Mapping[str, Any]) -> str:
    """Named by its effective parameters, without the keys that cannot change results
    (:data:`trace_edges.config.NON_RESULT_KEYS`): the same names the cache keys use."""
    return f"t_{teacher['backbone']['family']}_{digest(result_block('teacher', teacher))}"


def student_variant(student: Mapping[str, Any], base_student: Mapping[str, Any]) -> str:
    return "main" if dict(student) == dict(base_student) else f"s_{digest(student)}"


def data_block(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data`` block of the ablation images: the run's own, limited to the first
    ``ablations.max_images`` images (what rule ab_prepare prepares)."""
    return {**config.get("data", {}), "max_images": (config.get("ablations") or {}).get("max_images")}


def expand(config: Mapping[str, Any]) -> Expansion:
    """Every cell of every grid of the validated ``config``, with its variant."""
    ab = config.get("ablations") or {}
    base_t, base_s = config["teacher"], config["student"]
    cells: list[Cell] = []
    teachers: dict[str, dict[str, Any]] = {}
    students: dict[str, dict[str, Any]] = {}
    for grid, spec in (ab.get("grids") or {}).items():
        if not NAME.match(grid):
            raise ConfigError(f"ablations.grids: bad grid name {grid!r}", fix="use letters, digits, _ . -")
        for name, cell in spec["cells"].items():
            where = f"ablations.grids.{grid}.cells.{name}"
            if not NAME.match(str(name)):
                raise ConfigError(f"{where}: bad cell name", fix="use letters, digits, _ . -")
            edges = cell["edges"]
            t_over, s_over = cell.get("teacher") or {}, cell.get("student") or {}
            if edges == "none":
                if t_over or s_over:
                    raise ConfigError(f"{where}: a cell without edges takes no teacher/student overrides",
                                      fix="remove them or set edges: teacher|student")
                variant = "none"
            elif edges == "teacher":
                if s_over:
                    raise ConfigError(f"{where}: a teacher cell takes no student overrides", fix="remove them")
                teacher = validate(deep_merge(base_t, t_over), block="teacher", where=where + ".teacher")
                variant = teacher_variant(teacher)
                teachers[variant] = teacher
            elif edges == "student":
                if t_over:
                    raise ConfigError(f"{where}: student cells are trained on the run's own teacher labels "
                                      "and take no teacher overrides",
                                      fix="make a teacher cell for a teacher change, or change the teacher block")
                student = validate(deep_merge(base_s, s_over), block="student", where=where + ".student")
                variant = student_variant(student, base_s)
                students[variant] = student
            else:  # the schema forbids it; a direct caller might not have validated
                raise ConfigError(f"{where}: edges must be none, teacher or student (got {edges!r})")
            cells.append(Cell(grid, str(name), spec.get("paper", ""), edges, variant))
    return Expansion(cells, teachers, students)


def variants(exp: Expansion) -> list[str]:
    """Every edge variant scored (teachers, students), sorted; 'none' excluded."""
    return sorted(set(exp.teachers) | set(exp.students))


def cells_json(exp: Expansion) -> list[dict[str, Any]]:
    return [{"grid": c.grid, "cell": c.cell, "paper": c.paper, "edges": c.edges, "variant": c.variant}
            for c in exp.cells]


__all__ = ["VARIANT_NAME", "Cell", "Expansion", "cells_json", "data_block", "digest", "expand", "student_variant",
           "teacher_variant", "variants"]

"""``trace-edges audit``: prove the artifacts on disk are the ones that produced the numbers.

Two independent checks, each row of the report one artifact and one check:

* **hash** — every file of every output of a DVC stage against the md5 recorded in ``dvc.lock``
  (directory outputs through their ``.dir`` listing in the DVC cache): ``match``, ``differs``
  (one flipped byte is enough), ``missing``, ``extra`` (a file DVC did not record), or
  ``unverifiable`` (the listing is not in the local cache: ``dvc pull`` first).
* **provenance** — every provenance record inside those outputs against the current checkout:
  each recorded config value (``config_values``) against the config (for an ablation variant's
  artifacts, under ``ablations/<kind>/<variant>/``: the config with that variant's teacher or
  student block, as ``trace_edges.ablations`` expands the grids), the stage's code digest
  against the code, the model id/revision against the teacher config, and package versions
  against the installed ones (a version difference is reported as ``note``, not a failure).

Exit status 0 only when nothing ``differs``, is ``missing`` or ``extra``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml

from trace_edges import ablations, provenance
from trace_edges.config import load_workflow_config
from trace_edges.errors import ConfigError, DataError

FAILING = {"differs", "missing", "extra"}


@dataclass
class Row:
    artifact: str
    check: str
    status: str
    detail: str = ""


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _cache_object(root: Path, md5: str) -> Path:
    return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _lock_outs(root: Path, stage: str) -> list[Mapping[str, Any]]:
    lock = root / "dvc.lock"
    if not lock.is_file():
        raise DataError("dvc.lock not found", path=lock,
                        fix="run the workflow and `dvc commit <stage>` (or `dvc repro`), or pull a commit that has it")
    data = yaml.safe_load(lock.read_text()) or {}
    stages = data.get("stages", {})
    if stage not in stages:
        raise DataError(f"stage {stage!r} is not in dvc.lock (stages: {sorted(stages)})", path=lock,
                        fix="`dvc commit` that stage first")
    st = stages[stage]
    return list(st.get("outs", [])) + [o for o in st.get("metrics", []) or [] if isinstance(o, dict)] + \
        [o for o in st.get("plots", []) or [] if isinstance(o, dict)]


def check_hashes(root: Path, stage: str) -> Iterator[Row]:
    for out in _lock_outs(root, stage):
        rel = out["path"]
        md5 = out.get("md5", "")
        target = root / rel
        if md5.endswith(".dir"):
            listing_path = _cache_object(root, md5)
            if not listing_path.is_file():
                yield Row(rel, "hash", "unverifiable", "directory listing not in the local DVC cache (dvc pull)")
                continue
            listing = json.loads(listing_path.read_text())
            recorded = {e["relpath"]: e["md5"] for e in listing}
            if not target.is_dir():
                yield Row(rel, "hash", "missing", f"{len(recorded)} files recorded")
                continue
            for relpath, want in sorted(recorded.items()):
                f = target / relpath
                if not f.is_file():
                    yield Row(f"{rel}/{relpath}", "hash", "missing")
                elif md5_file(f) != want:
                    yield Row(f"{rel}/{relpath}", "hash", "differs",
                              f"md5 {md5_file(f)[:10]}… != recorded {want[:10]}…")
                else:
                    yield Row(f"{rel}/{relpath}", "hash", "match")
            for f in sorted(p for p in target.rglob("*") if p.is_file()):
                r = f.relative_to(target).as_posix()
                if r not in recorded:
                    yield Row(f"{rel}/{r}", "hash", "extra", "not recorded in dvc.lock")
        else:
            if not target.is_file():
                yield Row(rel, "hash", "missing")
            elif md5_file(target) != md5:
                yield Row(rel, "hash", "differs", f"md5 {md5_file(target)[:10]}… != recorded {md5[:10]}…")
            else:
                yield Row(rel, "hash", "match")


def _lookup(config: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _records(root: Path, paths: Iterable[str]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(file, provenance record) of every JSON file under ``paths`` that holds one."""
    for rel in paths:
        base = root / rel
        files = [base] if base.is_file() else sorted(base.rglob("*.json")) if base.is_dir() else []
        for f in files:
            if f.suffix != ".json" or f.stat().st_size > 50_000_000:
                continue
            try:
                data = json.loads(f.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # the hash check reports corrupted files
            if not isinstance(data, dict):
                continue
            rec = data.get("provenance") if isinstance(data.get("provenance"), dict) else (
                data if "code_digest" in data and "stage" in data else None)
            if rec:
                yield f.relative_to(root).as_posix(), rec


def _effective_config(rel: str, config: Mapping[str, Any], exp: ablations.Expansion | None
                      ) -> tuple[Mapping[str, Any] | None, str | None]:
    """The config an artifact was made with: the run's own, or, under ``ablations/``, the run's own
    limited to ``ablations.max_images`` images and, under ``ablations/<kind>/<variant>/``, with the
    variant's teacher or student block. ``(None, why)`` for a variant the
    current ablation grids no longer have."""
    parts = rel.split("/")
    if "ablations" not in parts:
        return config, None
    base = {**config, "data": ablations.data_block(config)}
    for part in parts[parts.index("ablations") + 1:]:
        part = part.split(".", 1)[0]  # metrics/uis/<variant>.json
        if exp is not None and part in exp.teachers:
            return {**base, "teacher": exp.teachers[part]}, None
        if exp is not None and part in exp.students:
            return {**base, "student": exp.students[part]}, None
        if ablations.VARIANT_NAME.match(part):
            return None, f"ablation variant {part!r} is no longer in the config's ablation grids"
    return base, None


def check_provenance(root: Path, stage: str, config: Mapping[str, Any]) -> Iterator[Row]:
    installed = provenance.package_versions()
    try:
        exp = ablations.expand(config) if config.get("ablations") else None
    except ConfigError:
        exp = None
    for rel, rec in _records(root, [o["path"] for o in _lock_outs(root, stage)]):
        problems, notes = [], []
        effective, gone = _effective_config(rel, config, exp)
        if effective is None:
            yield Row(rel, "provenance", "differs", str(gone))
            continue
        teacher_bb = effective.get("teacher", {}).get("backbone", {})
        for key, value in (rec.get("config_values") or {}).items():
            found, current = _lookup(effective, key)
            if not found:
                problems.append(f"{key}: no longer in the config")
            elif json.loads(json.dumps(current, default=str)) != value:
                problems.append(f"{key}: {value!r} -> {current!r}")
        st = rec.get("stage")
        if st in provenance.STAGES and rec.get("code_digest") != provenance.code_digest(st):
            problems.append(f"code of stage {st!r} changed since (digest {str(rec.get('code_digest'))[:10]}…)")
        model = rec.get("model")
        if isinstance(model, Mapping) and model.get("model") is not None and teacher_bb:
            for k in ("model", "revision", "family"):
                if k in model and k in teacher_bb and model[k] != teacher_bb[k]:
                    problems.append(f"model {k}: {model[k]!r} -> {teacher_bb[k]!r}")
        for pkg, ver in (rec.get("packages") or {}).items():
            if installed.get(pkg) not in (None, ver):
                notes.append(f"{pkg} {ver} -> {installed[pkg]}")
        if problems:
            yield Row(rel, "provenance", "differs", "; ".join(problems))
        elif notes:
            yield Row(rel, "provenance", "note", "package versions: " + ", ".join(notes))
        else:
            yield Row(rel, "provenance", "match")


def default_configfiles(root: Path, stage: str) -> list[Path]:
    """What the DVC stage's command runs with: config.yaml, plus config.<stage>.yaml for presets."""
    files = [root / "config.yaml"]
    if stage != "embedded":
        files.append(root / f"config.{stage}.yaml")
    return files


def audit(root: str | Path = ".", stage: str = "embedded",
          configfiles: Iterable[str | Path] | None = None) -> list[Row]:
    root = Path(root)
    config = load_workflow_config(*(list(configfiles) if configfiles else default_configfiles(root, stage)))
    return list(check_hashes(root, stage)) + list(check_provenance(root, stage, config))


def summarize(rows: list[Row]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[f"{r.check}:{r.status}"] = out.get(f"{r.check}:{r.status}", 0) + 1
    return dict(sorted(out.items()))


def format_table(rows: list[Row], *, verbose: bool = False) -> str:
    shown = [r for r in rows if verbose or r.status != "match"]
    lines = []
    if shown:
        w = min(max(len(r.artifact) for r in shown), 90)
        lines.append(f"{'artifact':<{w}}  {'check':<10}  {'status':<12}  detail")
        lines.append("-" * (w + 40))
        for r in shown:
            lines.append(f"{r.artifact:<{w}}  {r.check:<10}  {r.status:<12}  {r.detail}")
        lines.append("")
    lines.append("summary: " + ", ".join(f"{k} {v}" for k, v in summarize(rows).items()))
    ok = not any(r.status in FAILING for r in rows)
    lines.append("AUDIT PASSED" if ok else "AUDIT FAILED")
    failed = {r.check for r in rows if r.status in FAILING}
    if "hash" in failed:
        lines.append("  fix (hash): the files on disk are not the recorded ones (corrupted, edited or stale): "
                     "`dvc checkout <stage>` restores the recorded files from the DVC cache (`dvc pull <stage>` "
                     "when the cache lacks them); to remake them instead, delete the differing files and rerun their "
                     "rule (`snakemake --forcerun <rule>`: the other items are reused), then `dvc commit <stage>`")
    if "provenance" in failed:
        lines.append("  fix (provenance): the config or code changed since these artifacts were made: revert the "
                     "change, or rerun `snakemake` to remake the affected stages (then `dvc commit <stage>`)")
    return "\n".join(lines)

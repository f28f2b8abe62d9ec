"""Configuration: YAML + JSON-schema validation with defaults.

The same schema file (``schemas/config.schema.yaml``) is used by the Snakefile through
``snakemake.utils.validate`` and here, for running any stage without Snakemake. Stage blocks are
validated on their own against the schema's ``$defs`` when a CLI subcommand receives them as
``--params JSON``.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml
from jsonschema import Draft202012Validator, validators

from trace_edges.errors import ConfigError

SCHEMA_PATH = Path(__file__).with_name("schemas") / "config.schema.yaml"


@functools.lru_cache(maxsize=1)
def _schema_cached() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _load_schema() -> dict[str, Any]:
    return copy.deepcopy(_schema_cached())


def _extend_with_default(validator_class):
    """A validator that fills in ``default`` values (the jsonschema FAQ recipe, as Snakemake does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if "default" in subschema and prop not in instance:
                    instance[prop] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


_DefaultValidator = _extend_with_default(Draft202012Validator)


def _format_error(err: jsonschema.ValidationError, where: str) -> str:
    loc = ".".join(str(p) for p in err.absolute_path) or "<top level>"
    msg = f"{where}: invalid value at `{loc}`: {err.message}"
    # a `const` that comes from a cross-field rule (if/then) says why only in its description
    if err.validator == "const" and isinstance(err.schema, dict) and err.schema.get("description"):
        msg += f" ({err.schema['description']})"
    return msg


def validate(config: Mapping[str, Any], *, block: str | None = None,
             where: str = "config") -> dict[str, Any]:
    """Validate (a copy of) ``config`` and return it with every default filled in.

    With ``block`` the mapping is one stage block (e.g. ``"bgp"``) checked against ``$defs``.
    """
    schema = _load_schema()
    if block is not None:
        if block not in schema["$defs"]:
            raise ConfigError(f"unknown config block {block!r}")
        sub = dict(schema["$defs"][block])
        sub["$defs"] = schema["$defs"]
        schema = sub
    data = copy.deepcopy(dict(config))
    # Two passes: defaults of objects created by the first pass are filled by the second.
    for _ in range(2):
        errors = sorted(_DefaultValidator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            msg = "\n".join(_format_error(e, where) for e in errors[:10])
            raise ConfigError(msg, fix="see src/trace_edges/schemas/config.schema.yaml for every key, "
                                       "its type, allowed values and default")
    return data


def check_consistency(config: Mapping[str, Any], *, where: str = "config") -> None:
    """Rules across blocks that the schema cannot say clearly (called after :func:`validate` by
    :func:`load_config`, :func:`load_workflow_config` and the Snakefile).

    * An image-encoder teacher backbone (``dinov2``, the paper's non-diffusion control) has no
      timestep to distil into: no ``trace_student`` edge source and no student ablation cell.
    * A ``device: cuda`` anywhere (teacher backbone, ablation cells, MaskCut) needs ``gpu_env:
      cuda``: under ``--sdm conda`` the GPU rules would otherwise get CPU-only torch."""
    from trace_edges.families import ENCODER_FAMILIES

    cuda = sorted(_cuda_device_keys(config))
    if cuda and config.get("gpu_env", "cpu") != "cuda":
        raise ConfigError(
            f"{where}: {', '.join(cuda)} asks for a CUDA device, but gpu_env is "
            f"{config.get('gpu_env', 'cpu')!r}: under `snakemake --sdm conda` the GPU rules would run in "
            f"envs/trace-edges.yaml (CPU-only torch)",
            fix="set gpu_env: cuda (GPU rules use envs/trace-edges-gpu.yaml), or device: auto / cpu")
    family = ((config.get("teacher") or {}).get("backbone") or {}).get("family")
    if family not in ENCODER_FAMILIES:
        return
    cells = [f"{g}.{c}" for g, spec in (((config.get("ablations") or {}).get("grids")) or {}).items()
             for c, cell in (spec.get("cells") or {}).items() if (cell or {}).get("edges") == "student"]
    if "trace_student" in ((config.get("edges") or {}).get("sources") or []) or cells:
        raise ConfigError(
            f"{where}: teacher.backbone.family {family!r} is an image encoder (no diffusion timestep), so "
            f"no student can be distilled from it, but the run asks for one"
            + (f" (student cells: {cells})" if cells else " (edges.sources has trace_student)"),
            fix="drop trace_student from edges.sources and the student ablation cells, or use a diffusion "
                "family for the main teacher (encoders belong in the `backbone` ablation grid)")


def _cuda_device_keys(node: Any, path: str = "") -> list[str]:
    """Dotted paths of every ``device`` key whose value names CUDA (``cuda``, ``cuda:1``)."""
    out: list[str] = []
    if isinstance(node, Mapping):
        for k, v in node.items():
            sub = f"{path}.{k}" if path else str(k)
            if k == "device" and isinstance(v, str) and v.startswith("cuda"):
                out.append(sub)
            else:
                out += _cuda_device_keys(v, sub)
    return out


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load a YAML config (``None`` = pure defaults), apply ``overrides``, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("config file not found", path=path,
                              fix="pass --config config.yaml (the embedded default) or a preset beside it "
                                  "(config.paper.yaml, config.promerge.yaml)")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML ({exc})", path=path) from exc
        if not isinstance(raw, dict):
            raise ConfigError("top level must be a mapping", path=path)
    if overrides:
        raw = deep_merge(raw, overrides)
    out = validate(raw, where=str(path) if path else "config")
    check_consistency(out, where=str(path) if path else "config")
    return out


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_params(text: str | None, block: str) -> dict[str, Any]:
    """Parse and validate a ``--params JSON`` block passed by a Snakemake rule."""
    if text is None:
        return validate({}, block=block, where=f"--params ({block})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError("--params must be a JSON object")
    return validate(data, block=block, where=f"--params ({block})")


def load_workflow_config(*configfiles: str | Path) -> dict[str, Any]:
    """The config a Snakemake run sees: the files merged in order (the Snakefile's
    ``config.yaml`` first, then each ``--configfile``), then validated."""
    merged: dict[str, Any] = {}
    for f in configfiles:
        f = Path(f)
        if not f.is_file():
            raise ConfigError("config file not found", path=f)
        try:
            merged = deep_merge(merged, yaml.safe_load(f.read_text(encoding="utf-8")) or {})
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML ({exc})", path=f) from exc
    where = " + ".join(str(f) for f in configfiles)
    out = validate(merged, where=where)
    check_consistency(out, where=where)
    return out


#: Keys of a stage's validated block that cannot change any artifact (placement, fan-out, logging),
#: as dotted paths. Per-item cache keys hash the WHOLE block minus these (:func:`result_block`), so a
#: key added to the schema later is part of every cache key unless it is listed here on purpose.
#: ``backbone.device``: where the model runs (the same computation; GPU and CPU round floats
#: differently, so the provenance records the device actually used). ``shard_size``: how images are
#: grouped into jobs.
NON_RESULT_KEYS: dict[str, tuple[str, ...]] = {
    "teacher": ("shard_size", "backbone.device"),
}


def result_block(name: str, block: Mapping[str, Any], *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A copy of the validated config block ``name`` without its :data:`NON_RESULT_KEYS` and the
    dotted paths in ``drop`` (keys a downstream stage alone reads): what a cache key hashes."""
    out = copy.deepcopy(dict(block))
    for path in (*NON_RESULT_KEYS.get(name, ()), *drop):
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out

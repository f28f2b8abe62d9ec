"""``paper_vs_ours.md``: every number of the paper beside ours, with a status (generated, never edited).

The paper's values and the recipe for ours live in ``paper_numbers.yaml`` (next to this file). For
each entry the status is one of:

* **reproduced on this run** — our value was measured in the setting the paper reports it in:
  the paper preset on the paper's dataset, with the paper's model (a tiny model never counts);
* **proxy at embedded scale** — we measured the same quantity, but on the embedded data and/or a
  tiny random model: the number tests the machinery, it says nothing about the paper's claim;
* **needs the paper preset** — this run cannot measure it (e.g. MaskCut rows when the run used
  other proposals); the line gives the command that does;
* **not reproducible here** — the paper's pipeline part is not in this project (the reason is given).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from trace_edges.io import read_json, write_text
from trace_edges.proposals import PROPOSERS

NUMBERS = Path(__file__).with_name("paper_numbers.yaml")

REPRODUCED = "reproduced on this run"
PROXY = "proxy at embedded scale"
NEEDS = "needs the paper preset"
MISSING = "not reproducible here"

PAPER_COMMAND = "snakemake --cores all --configfile config.paper.yaml"
BUILTIN_PROPOSALS = tuple(PROPOSERS)
#: datasets a run can stand for: what our data.dataset is measured on
RUN_DATASET = {"coco2017_val": "coco2017_val", "coco_mini": "coco2017_val"}


def load_numbers(path: str | Path = NUMBERS) -> list[dict[str, Any]]:
    entries = yaml.safe_load(Path(path).read_text(encoding="utf-8"))["entries"]
    ids = [e["id"] for e in entries]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ValueError(f"{path}: duplicate ids {sorted(dup)}")
    return entries


def load_ablations(path: str | Path | None) -> tuple[dict[tuple[str, str, str], float], dict[tuple[str, str], float]]:
    """(grid, cell, metric) -> value from ablations_tidy.csv, (grid, cell) -> ms from ablations_latency.csv."""
    values: dict[tuple[str, str, str], float] = {}
    latency: dict[tuple[str, str], float] = {}
    if path is None or not Path(path).is_file():
        return values, latency
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            if r["value"] not in ("", "nan", None):
                values[(r["grid"], r["cell"], r["metric"])] = float(r["value"])
    lat = Path(path).with_name("ablations_latency.csv")
    if lat.is_file():
        with open(lat, newline="") as fh:
            for r in csv.DictReader(fh):
                latency[(r["grid"], r["cell"])] = float(r["teacher_ms_per_image"])
    return values, latency


class RunFacts:
    """What the run measured and how (preset, dataset, model, proposals)."""

    def __init__(self, config: Mapping[str, Any], summary: Mapping[str, Any],
                 ablations_csv: str | Path | None = None, speed: Mapping[str, Any] | None = None):
        self.config = config
        self.summary = summary
        self.ablation, self.latency = load_ablations(ablations_csv)
        self.speed = speed
        self.tiny = bool(config["teacher"]["backbone"]["tiny"])
        self.dataset = RUN_DATASET.get(config["data"]["dataset"], config["data"]["dataset"])
        self.full_data = config["data"]["dataset"] == "coco2017_val" and config["data"].get("max_images") is None
        prop = config["proposals"]
        #: the proposals' method: a built-in one, or the name of an imported one (external.name)
        self.proposals = prop["method"] if prop["method"] != "external" else \
            ((prop.get("external") or {}).get("name") or "external")

    def value(self, ours: Mapping[str, Any]) -> float | None:
        if "summary" in ours:
            return _get(self.summary, ours["summary"], ours["metric"])
        if "delta" in ours:
            a, b = (_get(self.summary, s, ours["metric"]) for s in ours["delta"])
            return None if a is None or b is None else a - b
        if "ablation" in ours:
            grid, cell = ours["ablation"]
            return self.ablation.get((grid, cell, ours["metric"]))
        if "ablation_latency" in ours:
            return self.latency.get(tuple(ours["ablation_latency"]))
        if "speed" in ours:
            if not self.speed:
                return None
            key = ours["speed"]
            return {"teacher_ms": self.speed["teacher"]["median_ms"], "student_ms": self.speed["student"]["median_ms"],
                    "ratio": self.speed["ratio_teacher_over_student"]}[key]
        raise ValueError(f"unknown `ours` recipe {dict(ours)}")

    def unmet(self, ours: Mapping[str, Any]) -> str | None:
        """Why this run cannot stand for the entry (a `requires` the run's config does not meet)."""
        for block, want in (ours.get("requires") or {}).items():
            if block == "proposals" and self.proposals != want:
                if want in BUILTIN_PROPOSALS:
                    return f"proposals.method: {want} (this run: {self.proposals})"
                return (f"{want} proposals (proposals.method: external, external.name: {want}; "
                        f"this run: {self.proposals})")
        return None


def _get(summary: Mapping[str, Any], source: str, metric: str) -> float | None:
    row = summary.get(source)
    return None if row is None else row.get(metric)


def _ablation_images(config: Mapping[str, Any]) -> str:
    n = config.get("ablations", {}).get("max_images")
    return "all images" if n is None else f"first {n} images"


def assess(entry: Mapping[str, Any], facts: RunFacts) -> dict[str, Any]:
    """Our value, its status and a note for one paper entry."""
    ours = entry.get("ours")
    out = {"ours": None, "status": MISSING, "note": entry.get("missing", "")}
    if not ours:
        return out
    unmet = facts.unmet(ours)
    if unmet:
        how = f"`{entry['command']}`" if entry.get("command") else f"`{PAPER_COMMAND}` (the paper preset uses it)"
        return {"ours": None, "status": NEEDS, "note": f"needs {unmet}: {how}"}
    value = facts.value(ours)
    if value is None:
        if "speed" in ours:
            return {"ours": None, "status": NEEDS,
                    "note": "run `python benchmarks/bench_speed.py` (+ `--configfile config.paper.yaml --device cuda`)"}
        if "ablation" in ours or "ablation_latency" in ours:
            return {"ours": None, "status": NEEDS, "note": "ablations disabled or cell missing in this run's config"}
        return {"ours": None, "status": NEEDS, "note": f"this run has no `{ours.get('summary')}` row"}
    value = value * float(entry.get("scale", 1))
    same_data = facts.full_data and entry.get("dataset") == facts.dataset
    if "ablation" in ours or "ablation_latency" in ours:
        same_data = same_data and facts.config["ablations"].get("max_images") is None
    where = f"{facts.config['data']['dataset']}" + (
        f", {_ablation_images(facts.config)}" if ("ablation" in ours or "ablation_latency" in ours) else "")
    model = "tiny random model" if facts.tiny else facts.config["teacher"]["backbone"]["model"]
    if "speed" in ours:
        device = facts.speed.get("teacher", {}).get("device", "?")
        where = f"{facts.speed.get('machine', {}).get('cpu', '?')} ({device})"
    status = REPRODUCED if (same_data and not facts.tiny) else PROXY
    note = f"{where}; {model}"
    if status == PROXY and not facts.tiny and entry.get("dataset") != facts.dataset:
        note += f"; the paper measured {entry.get('dataset')}"
    if entry.get("source"):
        note += f"; paper value: {entry['source']}"
    return {"ours": value, "status": status, "note": note}


def _fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "–"
    digits = 3 if metric in ("ODS", "OIS", "clDice", "SSIM") else 0 if metric == "ms/img" else 1
    text = f"{v:.{digits}f}"
    if float(text) == 0.0:
        text = text.lstrip("-")  # a value that rounds to zero prints without a sign ("-0.0" -> "0.0")
    return text + ("×" if metric == "speed-up" else "")


def render(entries: Sequence[Mapping[str, Any]], facts: RunFacts, *, provenance: Mapping[str, Any]) -> str:
    cfg = facts.config
    lines = [
        "# Paper vs ours",
        "",
        "<!-- GENERATED by `trace-edges report-paper-vs-ours` (rule paper_vs_ours). Do not edit: change "
        "src/trace_edges/report/paper_numbers.yaml or the run, then rerun the workflow. -->",
        "",
        f"Run: preset `{cfg['preset']}`, dataset `{cfg['data']['dataset']}`, teacher "
        f"`{cfg['teacher']['backbone']['model']}` ({'TINY RANDOM' if facts.tiny else 'real weights'}), "
        f"proposals `{cfg['proposals']['method']}`, code `{provenance.get('git', '?')}`.",
        "",
        "Status: **reproduced on this run** = measured in the paper's setting (paper preset, the paper's data and "
        "model); **proxy at embedded scale** = the same quantity on embedded data and/or a tiny random model "
        "(tests the machinery, not the claim); **needs the paper preset** = the command that measures it is "
        f"given (`{PAPER_COMMAND}`); **not reproducible here** = the pipeline part is not in this project.",
        "",
        "AP/AR/PQ ×100; ODS/OIS/clDice/SSIM in [0, 1]; latency ms/image.",
        "",
    ]
    counts: dict[str, int] = {}
    current = None
    for e in entries:
        a = assess(e, facts)
        counts[a["status"]] = counts.get(a["status"], 0) + 1
        table = e["table"]
        if table != current:
            lines += ["", f"## {table}", "", "| row | setting | metric | paper | ours | status | note |",
                      "|---|---|---|---|---|---|---|"]
            current = table
        paper = "–" if e.get("paper") is None else _fmt(float(e["paper"]), e["metric"])
        lines.append(f"| {e['row']} | {e['setting']} | {e['metric']} | {paper} | {_fmt(a['ours'], e['metric'])} | "
                     f"{a['status']} | {a['note']} |")
    lines += ["", "## Summary", ""] + [f"* {k}: {v}" for k, v in sorted(counts.items())] + [""]
    return "\n".join(lines)


def build_paper_vs_ours(config: Mapping[str, Any], summary_json: str | Path, out_paths: Sequence[str | Path], *,
                        ablations_csv: str | Path | None = None, speed_json: str | Path | None = None,
                        numbers: str | Path = NUMBERS) -> str:
    from trace_edges import provenance

    summary = read_json(summary_json, what="results summary")
    speed = read_json(speed_json, what="speed benchmark") if speed_json and Path(speed_json).is_file() else None
    facts = RunFacts(config, summary, ablations_csv, speed)
    text = render(load_numbers(numbers), facts, provenance={"git": provenance.git_describe() or "unknown"})
    for p in out_paths:
        write_text(p, text)
    return text


__all__ = ["MISSING", "NEEDS", "PROXY", "REPRODUCED", "RunFacts", "assess", "build_paper_vs_ours", "load_numbers",
           "render"]

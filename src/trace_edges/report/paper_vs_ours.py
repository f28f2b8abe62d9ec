"""``paper_vs_ours.md``: every number of the paper beside ours, with a status (generated, never edited).

The paper's values and the recipe for ours live in ``paper_numbers.yaml`` (next to this file). For
each entry the status is one of:

* **reproduced on this run** — our value was measured in the setting the paper reports it in:
  the paper preset on the paper's dataset, with the paper's model (a tiny model never counts);
* **proxy at embedded scale** — we measured the same quantity, but on the embedded data and/or a
  tiny random model: the number tests the machinery, it says nothing about the paper's claim;
* **proxy dataset, real weights** — a row whose value comes from a model with its real published
  weights (entry key ``model`` with ``real_weights: true``, e.g. HED), not from the run's teacher,
  measured on other data than the paper's (the embedded images are 16 of COCO val2017, the paper's
  Table 6 is COCO 2014 val): the model is the paper's, the dataset is a proxy;
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
REAL_PROXY = "proxy dataset, real weights"
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


def load_notes(path: str | Path = NUMBERS) -> list[str]:
    """The file's ``notes``: free text printed under "## Notes"."""
    return [str(n) for n in yaml.safe_load(Path(path).read_text(encoding="utf-8")).get("notes") or []]


#: measurements made outside the DAG (benchmarks/, committed) that the "Protocol choices (issue 14)"
#: section reads; the rule paper_vs_ours passes those that exist (``--evidence NAME=PATH``)
EVIDENCE = {
    "propagate_rule": "results/benchmarks/propagate_rule.csv",   # benchmarks/bench_propagate_rule.py
    "maskcut_loop": "results/benchmarks/maskcut_loop.csv",       # benchmarks/bench_maskcut_loop.py
    "lrec_gradient": "results/benchmarks/lrec_gradient.json",    # benchmarks/bench_lrec_gradient.py
}
_EVIDENCE_COLUMNS = {"propagate_rule": {"rule", "edge_source", "AP", "AR100", "images"},
                     "maskcut_loop": {"loop", "AP", "AR100", "masks", "images_differing", "images", "model"}}


def load_evidence(paths: Mapping[str, str | Path | None]) -> dict[str, Any]:
    """``{name: rows (CSV) or dict (JSON)}`` for each :data:`EVIDENCE` file given that exists."""
    from trace_edges.errors import ConfigError, DataError

    out: dict[str, Any] = {}
    for name, path in paths.items():
        if name not in EVIDENCE:
            raise ConfigError(f"unknown evidence {name!r}", fix=f"use one of {sorted(EVIDENCE)}")
        if not path or not Path(path).is_file():
            continue
        if str(path).endswith(".json"):
            out[name] = read_json(path, what=f"{name} benchmark")
            continue
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        need = _EVIDENCE_COLUMNS[name]
        if not rows or not need <= set(rows[0]):
            raise DataError(f"{name} CSV lacks the columns {sorted(need - set(rows[0] if rows else ()))}",
                            path=path, fix=f"rerun the benchmark that writes {EVIDENCE[name]}")
        out[name] = rows
    return out


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
                 ablations_csv: str | Path | None = None, speed: Mapping[str, Any] | None = None,
                 evidence: Mapping[str, Any] | None = None):
        self.config = config
        #: the benchmarks' measurements of the protocol choices (:func:`load_evidence`); absent ones are missing
        self.evidence = dict(evidence or {})
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
    if "speed" in ours:
        device = facts.speed.get("teacher", {}).get("device", "?")
        where = f"{facts.speed.get('machine', {}).get('cpu', '?')} ({device})"
    if entry.get("model"):  # the value does not come from the run's teacher (HED, Canny, the ORACLE)
        model, tiny = entry["model"], False
        status = REPRODUCED if same_data else REAL_PROXY if entry.get("real_weights") else PROXY
    else:
        model = "tiny random model" if facts.tiny else facts.config["teacher"]["backbone"]["model"]
        tiny = facts.tiny
        status = REPRODUCED if (same_data and not tiny) else PROXY
    note = f"{where}; {model}"
    if ours.get("metric") in ("AP", "AP50", "AP75", "AR100") and "summary" in ours:
        note += f"; UIS proposals: {facts.proposals}"
    if status in (PROXY, REAL_PROXY) and not tiny and entry.get("dataset") != facts.dataset:
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


def _maskcut_line(config: Mapping[str, Any], rows: Sequence[Mapping[str, str]] | None) -> str:
    mc = (config.get("proposals") or {}).get("maskcut") or {}
    method = config["proposals"]["method"]
    line = ("* **MaskCut loop.** Paper: MaskCut as CutLER runs it. Ours: CutLER's `maskcut_forward` loop "
            f"(N = {mc.get('n_masks', 3)} rounds, a rejected round counts; the size (≤ {mc.get('min_frac', 0.01):g} of "
            f"the patches) and IoU (> {mc.get('max_iou', 0.5):g} with the previous round's mask) checks only from "
            "round 1; a rejected round removes nothing from the graph and leaves an empty previous mask), not the "
            "earlier loop that checked the size from round 0 and stopped at the first rejection. "
            + ("This run's proposals are MaskCut's. " if method == "maskcut" else
               f"This run's proposals are `{method}`, so the loop does not act on its numbers. "))
    by = {r["loop"]: r for r in rows or ()}
    if not {"cutler", "earlier"} <= set(by):
        return line + ("Effect not measured: run `python benchmarks/bench_maskcut_loop.py` "
                       f"(→ `{EVIDENCE['maskcut_loop']}`).")
    c, e = by["cutler"], by["earlier"]
    return line + (f"Measured (`{EVIDENCE['maskcut_loop']}`, {c['images']} embedded images, {c['model']}; CutLER's "
                   f"loop vs the earlier one): proposals differ on {c['images_differing']} of "
                   f"{c['images']} images, {c['masks']} vs {e['masks']} masks, class-agnostic AP/AR100 ×100 "
                   f"{c['AP']}/{c['AR100']} vs {e['AP']}/{e['AR100']}.")


def _propagate_line(config: Mapping[str, Any], rows: Sequence[Mapping[str, str]] | None) -> str:
    rule = config["bgp"]["propagate"]["rule"]
    head = ("* **BGP propagation rule.** Paper: IRN-style propagation, decision rule not stated. Ours: "
            + ("`irn`, IRN's own rule (scores / one global maximum, argmax against a constant background "
               f"{config['bgp']['propagate']['threshold']:g}; disjoint masks, so the merge step only fuses identical "
               "masks)" if rule == "irn" else
               "`per_mask` (each piece / its own maximum, kept above the threshold and the propagated background; "
               "masks may overlap and merge)")
            + f" (`bgp.propagate.rule: {rule}`).")
    pairs: dict[str, dict[str, Mapping[str, str]]] = {}
    for r in rows or ():
        if r["rule"] in ("irn", "per_mask"):
            pairs.setdefault(r["edge_source"], {})[r["rule"]] = r
    pairs = {s: p for s, p in pairs.items() if len(p) == 2}
    if not pairs:
        return head + (f" Effect not measured: run `python benchmarks/bench_propagate_rule.py` "
                       f"(→ `{EVIDENCE['propagate_rule']}`).")
    n = next(iter(pairs.values()))["irn"]["images"]
    cells = "; ".join(f"{s} {p['irn']['AP']}/{p['irn']['AR100']} vs {p['per_mask']['AP']}/{p['per_mask']['AR100']}"
                      for s, p in pairs.items())
    better = sum(float(p["irn"]["AP"]) >= float(p["per_mask"]["AP"])
                 and float(p["irn"]["AR100"]) >= float(p["per_mask"]["AR100"]) for p in pairs.values())
    return (head + f" Measured (`{EVIDENCE['propagate_rule']}`: {n} embedded images, Felzenszwalb proposals, "
            f"class-agnostic AP/AR100 ×100, irn vs per_mask): {cells}. irn ≥ per_mask on both in {better} of "
            f"{len(pairs)} edge sources.")


def _lrec_line(loss: Mapping[str, Any], grad: Mapping[str, Any] | None) -> str:
    lo, hi = (loss.get("rec_t") or [0, 0])
    if hi == 0:
        return "Î decoded from the t = 0 pass (gradient on the LoRA ∝ σ(0) ≈ 0.003: the term barely acts)"
    rec = f"Î decoded from a second LoRA pass at t ~ U{{{lo}..{hi}}} (x̂_0 from x_t), so the term reaches the LoRA"
    summ = (grad or {}).get("summary") or {}
    if "init/sampled" in summ and "init/t0" in summ:
        return rec + (f" (measured median ‖∇L_rec‖/‖∇Dice‖ on the LoRA {summ['init/sampled']['median_ratio']:.2f} vs "
                      f"{summ['init/t0']['median_ratio']:.4f} at t = 0: `{EVIDENCE['lrec_gradient']}`)")
    return rec + " (gradient ratio not measured: run `python benchmarks/bench_lrec_gradient.py`)"


def protocol_choices(config: Mapping[str, Any], evidence: Mapping[str, Any] | None = None) -> list[str]:
    """The run's five protocol choices of issue 14 beside the paper's, one line each: the MaskCut loop,
    the student's training images, decoder and L_rec, and BGP's propagation rule, each with its measured
    effect where a benchmark measured it (read from :data:`EVIDENCE`'s files, never typed in)."""
    evidence = evidence or {}
    st = config.get("student") or {}
    td, dec, loss = st.get("train_data") or {}, st.get("decoder") or {}, st.get("loss") or {}
    if td.get("transductive"):
        data = ("**the evaluation images** (`student.train_data.transductive: true`, explicit): the student "
                "has seen the images it is scored on")
    else:
        n = "all" if td.get("max_images") is None else f"the first {td['max_images']}"
        data = (f"`{td.get('root')}` ({n} images; `student.train_data`), checked disjoint from the evaluation "
                "images by sha256 and COCO id; the list's sha256 is in the student's model.json")
    layers, hidden = int(dec.get("layers", 1)), int(dec.get("hidden", 32))
    n_par = 4096 * (9 * (hidden if layers > 1 else 1)) + (
        (layers - 2) * (hidden * hidden * 9 + hidden) + hidden * 9 + hidden + 1 if layers > 1 else 1)
    rec = _lrec_line(loss, evidence.get("lrec_gradient"))
    return [
        "## Protocol choices (issue 14)",
        "",
        _maskcut_line(config, evidence.get("maskcut_loop")),
        f"* **Training images.** Paper: ImageNet (authors' README). Ours: {data}.",
        f"* **Edge decoder.** Paper: 0.1 MB (Table 9). Ours: {layers} conv layer(s)"
        + (f" × {hidden} channels" if layers > 1 else "") + f" = {n_par:,} parameters ({4 * n_par / 1e6:.2f} MB "
        "float32) at SD3.5-L 1024 px (4096 attention channels); each student's model.json reports its own.",
        f"* **L_rec.** Paper: ‖I − Î‖² with Î from the frozen VAE. Ours: {rec}. SSIM(I, Î) is reported in the "
        "L_rec ablation rows above.",
        _propagate_line(config, evidence.get("propagate_rule")),
        "",
    ]


def render(entries: Sequence[Mapping[str, Any]], facts: RunFacts, *, provenance: Mapping[str, Any],
           notes: Sequence[str] = ()) -> str:
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
        "(tests the machinery, not the claim); **proxy dataset, real weights** = a model with its real published "
        "weights (HED) on other data than the paper's; **needs the paper preset** = the command that measures it is "
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
    lines += [""] + protocol_choices(cfg, facts.evidence)
    if notes:
        lines += ["## Notes", ""] + [f"* {n}" for n in notes] + [""]
    lines += ["## Summary", ""] + [f"* {k}: {v}" for k, v in sorted(counts.items())] + [""]
    return "\n".join(lines)


def build_paper_vs_ours(config: Mapping[str, Any], summary_json: str | Path, out_paths: Sequence[str | Path], *,
                        ablations_csv: str | Path | None = None, speed_json: str | Path | None = None,
                        numbers: str | Path = NUMBERS, evidence: Mapping[str, str | Path] | None = None) -> str:
    from trace_edges import provenance

    summary = read_json(summary_json, what="results summary")
    speed = read_json(speed_json, what="speed benchmark") if speed_json and Path(speed_json).is_file() else None
    facts = RunFacts(config, summary, ablations_csv, speed, evidence=load_evidence(evidence or {}))
    text = render(load_numbers(numbers), facts, provenance={"git": provenance.git_describe() or "unknown"},
                  notes=load_notes(numbers))
    for p in out_paths:
        write_text(p, text)
    return text


__all__ = ["EVIDENCE", "MISSING", "NEEDS", "PROXY", "REAL_PROXY", "REPRODUCED", "RunFacts", "assess",
           "build_paper_vs_ours", "load_evidence", "load_notes", "load_numbers", "protocol_choices", "render"]

"""Evaluate a prompt-prediction folder and write metrics.csv, summary.json, report.md and plots.

All inputs are validated (:mod:`.manifest`) before any metric is computed or any file is written.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import multiprocessing
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Union

import numpy as np

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.evaluation import plots
from nnunetv2_text.evaluation.overlays import OVERLAYS, write_case_overlay
from nnunetv2_text.evaluation.manifest import (CaseJob, EvaluationInputError, drop_unannotated, load_array,
                                               plan_cases, read_manifest, resolve_prompts)
from nnunetv2_text.evaluation.metrics import METRIC_NAMES, laterality_pairs, mask_metrics, wrong_side_fraction
from nnunetv2_text.evaluation.robustness import (left_right_summary, load_paraphrases, robustness_stats,
                                                 summarize_values)
from nnunetv2_text.text.sources import SOURCES_FILE, load_sources
from nnunetv2_text.text.vocabulary import Vocabulary, load_vocabulary, resolve_vocabulary_path
from nnunetv2_text.utils.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
CSV_COLUMNS = ["case", "prompt", "concept", "is_negative", "dice", "nsd", "hd95_mm", "cldice", "betti0_error",
               "pred_volume_ml", "ref_volume_ml", "wrong_side_fraction"]
SUMMARY_METRICS = list(METRIC_NAMES)
ROBUSTNESS_COLUMNS = ["concept", "n_cases", "n_wordings", "mean_dice", "std_dice", "worst_dice", "gap"]


# ----------------------------------------------------------------------------- small writers
def fmt(v: object, digits: int = 4) -> str:
    """Number formatting shared by CSV and Markdown: nan/inf spelled out, floats rounded."""
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}f}"
    return str(v)


def write_csv(path: PathLike, rows: Sequence[Mapping], columns: Sequence[str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([fmt(r.get(c), 6) for c in columns])
    atomic_write_text(path, buf.getvalue())


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v, 3) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def json_safe(obj: object) -> object:
    """Strict JSON: NaN and infinities become null (counts of infinite values are stored separately)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# ----------------------------------------------------------------------------- computing
def evaluate_case(job: CaseJob) -> List[dict]:
    """Metrics of every prompt of one case (worker function; must stay picklable)."""
    ref, spacing = load_array(job.ref_file)
    rows = []
    for p in job.prompts:
        pred, _ = load_array(p.pred_file)
        pred = pred > 0
        ref_mask = np.isin(ref, p.labels)
        row = {"case": job.case, "prompt": p.prompt, "concept": p.concept_id, "is_negative": not ref_mask.any()}
        row.update(mask_metrics(pred, ref_mask, spacing, job.tolerance_mm, p.tubular))
        row["wrong_side_fraction"] = (wrong_side_fraction(pred, np.isin(ref, p.counterpart_labels))
                                      if p.counterpart_labels else math.nan)
        rows.append(row)
    logger.debug("case %s: %d prompts evaluated", job.case, len(rows))
    return rows


def run_jobs(func, jobs: Sequence, num_processes: int = 1) -> List:
    """Map ``func`` over jobs, in a spawn pool when ``num_processes`` > 1; results keep the job order."""
    if num_processes <= 1 or len(jobs) <= 1:
        return [func(j) for j in jobs]
    with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
        return pool.map(func, jobs, chunksize=1)


def resolve_tubular(vocab: Vocabulary, tubular: Optional[Sequence[str]]) -> Optional[set]:
    """Concept ids that get clDice; None = all. Default: all for a vocabulary named TopCoW, else none."""
    if tubular is None:
        return None if vocab.name.lower() == "topcow" else set()
    if any(t.lower() == "all" for t in tubular):
        return None
    ids = {c.id for c in vocab.concepts}
    unknown = [t for t in tubular if t not in ids]
    if unknown:
        raise EvaluationInputError(f"--tubular: {unknown} are not concept ids of {vocab.source}")
    return set(tubular)


def summarize(rows: Sequence[Mapping], vocab: Vocabulary) -> dict:
    """Per-concept and overall statistics; overlap metrics over positive prompts only."""
    def block(rs: Sequence[Mapping]) -> dict:
        pos = [r for r in rs if not r["is_negative"]]
        neg = [r for r in rs if r["is_negative"]]
        out = {"n_positive": len(pos), "n_negative": len(neg)}
        for m in SUMMARY_METRICS:
            out[m] = summarize_values(r[m] for r in pos)
        out["negative"] = {
            "n": len(neg),
            "false_positive_rate": float(np.mean([r["pred_volume_ml"] > 0 for r in neg])) if neg else None,
            "mean_pred_volume_ml": float(np.mean([r["pred_volume_ml"] for r in neg])) if neg else None,
        }
        return out

    per_concept = {}
    for c in vocab.concepts:
        rs = [r for r in rows if r["concept"] == c.id]
        if rs:
            per_concept[c.id] = {"main": c.main, "labels": list(c.labels), **block(rs)}
    overall = block(rows)
    means = [v["dice"]["mean"] for v in per_concept.values() if v["dice"]["mean"] is not None]
    overall["concept_mean_dice"] = float(np.mean(means)) if means else None
    overall["n_cases"] = len({r["case"] for r in rows})
    return {"per_concept": per_concept, "overall": overall}


def evaluate_folder(pred_folder: PathLike, ref_folder: PathLike, vocab: Union[PathLike, Vocabulary],
                    out_folder: PathLike, nsd_tolerance: float = 1.0, paraphrases: Optional[PathLike] = None,
                    tubular: Optional[Sequence[str]] = None, num_processes: int = 1,
                    sources: Optional[PathLike] = None, overlay_images: Optional[PathLike] = None) -> dict:
    """Evaluate every (case, prompt) mask of ``pred_folder`` against ``ref_folder``; return summary.json's content.

    ``sources``: a merged dataset's ``sources.json`` (default: the one beside ``ref_folder``, if any); pairs
    whose concept the case's source does not annotate are skipped and counted. ``overlay_images``: the
    folder of the input images (``<case>_0000<ending>``); each evaluated case then gets
    ``overlays/<case>.png`` with the reference outlined beside the prediction."""
    if not isinstance(vocab, Vocabulary):
        vocab = load_vocabulary(resolve_vocabulary_path(vocab))
    manifest = read_manifest(pred_folder)
    para_map = load_paraphrases(paraphrases, vocab) if paraphrases else None
    concepts = resolve_prompts(manifest.prompts(), vocab, para_map)
    tub = resolve_tubular(vocab, tubular)
    pairs = laterality_pairs({c.id: c.main for c in vocab.concepts})
    counterparts = {cid: tuple(vocab.concept(other).labels) for cid, other in pairs.items()}
    jobs = plan_cases(manifest, ref_folder, concepts, tub, counterparts, nsd_tolerance)
    sources_file = Path(sources) if sources else Path(ref_folder).parent / SOURCES_FILE
    if sources and not sources_file.is_file():
        raise EvaluationInputError(f"{sources_file}: sources file not found")
    try:
        case_sources = load_sources(sources_file)
        jobs, skipped = drop_unannotated(jobs, case_sources)
    except UserInputError as e:
        raise EvaluationInputError(str(e)) from None
    if skipped:
        logger.info("%d (case, prompt) pairs skipped: their concept is not annotated by the case's source", skipped)
    images = overlay_image_files(jobs, overlay_images, manifest.file_ending) if overlay_images else {}
    logger.info("evaluating %d cases, %d prompts", len(jobs), sum(len(j.prompts) for j in jobs))

    rows = [r for case_rows in run_jobs(evaluate_case, jobs, num_processes) for r in case_rows]
    summary = {"format": "nnunetv2_text.evaluation", "version": 1,
               "settings": {"pred_folder": str(pred_folder), "ref_folder": str(ref_folder),
                            "vocabulary": vocab.name, "vocabulary_source": vocab.source,
                            "nsd_tolerance_mm": nsd_tolerance, "paraphrases": str(paraphrases) if paraphrases else None,
                            "cldice_concepts": "all" if tub is None else sorted(tub), "model": manifest.model,
                            "sources": str(sources_file) if case_sources is not None else None},
               "skipped_unannotated": skipped,
               **summarize(rows, vocab)}
    order = {c.id: i for i, c in enumerate(vocab.concepts)}
    rob = sorted(robustness_stats(rows), key=lambda r: order[r["concept"]])
    summary["robustness"] = {r["concept"]: {k: r[k] for k in ROBUSTNESS_COLUMNS[1:] + ["per_wording"]}
                             for r in rob} or None
    lr = sorted(left_right_summary(rows, pairs), key=lambda r: order[r["concept"]]) if pairs else []
    summary["left_right"] = {r["concept"]: {k: v for k, v in r.items() if k != "concept"} for r in lr} or None

    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "metrics.csv", rows, CSV_COLUMNS)
    if rob:
        write_csv(out / "robustness.csv", rob, ROBUSTNESS_COLUMNS)
    summary["figures"] = [p.name for p in _draw_figures(out, rows, rob)]
    _draw_overlays(out, jobs, images, manifest)
    summary["overlays"] = OVERLAYS if images else None
    atomic_write_json(out / "summary.json", json_safe(summary))
    atomic_write_text(out / "report.md", render_report(summary))
    logger.info("wrote %s", out)
    return summary


def _draw_figures(out: Path, rows: list, rob: list) -> list:
    """Dice per concept, and Dice over paraphrases where there are any: the written files."""
    figures = plots.boxplots(plots.per_group_values([r for r in rows if not r["is_negative"]], "concept", "dice"),
                             out / "dice_boxplot", "Dice per concept (positive prompts)")
    if rob:
        figures += plots.boxplots({r["concept"]: r["values"] for r in rob}, out / "robustness_boxplot",
                                  "Dice over paraphrases (all cases x wordings)")
    return figures


def _draw_overlays(out: Path, jobs: Sequence[CaseJob], images: dict, manifest) -> None:
    """``overlays/<case>.png`` for each case with an image: prediction and reference outlined."""
    for job in jobs:
        if job.case in images:
            write_case_overlay(out / OVERLAYS / f"{job.case}.png", images[job.case], manifest.folder,
                               {p.prompt: manifest.records[job.case][p.prompt] for p in job.prompts}, job.ref_file,
                               {p.prompt: p.labels for p in job.prompts}, title=job.case)


def overlay_image_files(jobs: Sequence[CaseJob], images_folder: PathLike, file_ending: str) -> dict:
    """case -> its first channel's image, checked before any metric is computed."""
    files = {j.case: Path(images_folder) / f"{j.case}_0000{file_ending}" for j in jobs}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        raise EvaluationInputError(f"--save_overlays: {len(missing)} image(s) not found, e.g. {missing[0]}")
    return files


# ----------------------------------------------------------------------------- markdown
def _ms(block: Mapping) -> str:
    if block["mean"] is None:
        return "–" if not block.get("n_infinite") else f"inf (n={block['n_infinite']})"
    s = f"{block['mean']:.3f} ± {block['std']:.3f}"
    return s + (f" (+{block['n_infinite']} inf)" if block.get("n_infinite") else "")


def render_report(summary: Mapping) -> str:
    """report.md: settings, overall and per-concept tables, robustness and left/right sections, figures."""
    s = summary["settings"]
    o = summary["overall"]
    parts = [f"# Evaluation report\n\nPredictions `{s['pred_folder']}` vs reference `{s['ref_folder']}`, "
             f"vocabulary {s['vocabulary']}, NSD tolerance {s['nsd_tolerance_mm']} mm, clDice for: "
             f"{s['cldice_concepts'] if s['cldice_concepts'] == 'all' else ', '.join(s['cldice_concepts']) or 'none'}.\n"
             "Overlap metrics are over positive prompts (concept present in the reference); negative prompts "
             "(concept absent) are judged by their predicted volume.\n"]
    header = ["concept", "n pos", "Dice", "NSD", "HD95 mm", "clDice", "Betti-0 err", "n neg", "FP rate", "FP ml"]

    def line(name: str, b: Mapping) -> list:
        neg = b["negative"]
        return [name, b["n_positive"]] + [_ms(b[m]) for m in SUMMARY_METRICS] + [
            neg["n"], neg["false_positive_rate"], neg["mean_pred_volume_ml"]]

    parts.append(f"## Overall\n\n{o['n_cases']} cases; mean of concept Dice means: {fmt(o['concept_mean_dice'], 3)}\n\n"
                 + md_table(header, [line("all prompts", o)]))
    parts.append("## Per concept\n\n" + md_table(header, [line(f"{cid} ({b['main']})", b)
                                                         for cid, b in summary["per_concept"].items()]))
    if summary.get("robustness"):
        parts.append("## Prompt robustness (SEER)\n\nPer case over the wordings of a concept: mean, std (ddof 0) "
                     "and worst Dice, averaged over cases; gap = mean − worst.\n\n" + md_table(
                         ["concept", "cases", "wordings", "mean", "std", "worst", "gap"],
                         [[c] + [r[k] for k in ROBUSTNESS_COLUMNS[1:]] for c, r in summary["robustness"].items()]))
    if summary.get("left_right"):
        parts.append("## Left/right confusion\n\nFraction of a lateral prompt's predicted voxels inside the "
                     "reference of its mirror concept; confusion rate = share of non-empty predictions with more "
                     "than half of their voxels on the wrong side.\n\n" + md_table(
                         ["concept", "mirror", "non-empty", "mean wrong-side fraction", "confusion rate"],
                         [[c, r["counterpart"], r["n_nonempty"], r["mean_wrong_side_fraction"], r["confusion_rate"]]
                          for c, r in summary["left_right"].items()]))
    if summary.get("overlays"):
        parts.append(f"## Overlays\n\n`{summary['overlays']}/<case>.png`: each prompt's mask (its own colour) and "
                     "its reference (white) outlined on three slices of the image, in the patient's orientation.\n")
    if summary.get("figures"):
        parts.append("## Figures\n\n" + "\n".join(f"![{f}]({f})" for f in summary["figures"]) + "\n")
    return "\n".join(parts)

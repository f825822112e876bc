"""CoWTalk mode: how much does instruction-guided refinement repair each error type?

For every case, the erroneous input shape (one binary channel per class in the raw dataset) and the
refined output (a label map) are both scored against the ground truth; the table averages per error type:
class-average Dice, clDice of the merged (all-vessel) binary mask, class-average Betti-0 error, and the
Dice of the vessels the case's errors name (where an instruction's verb shows: other vessels never change).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

from nnunetv2_text.evaluation import plots
from nnunetv2_text.evaluation.manifest import (EvaluationInputError, check_same_geometry, load_array,
                                               read_json_input)
from nnunetv2_text.evaluation.metrics import betti0_error, cldice, dice
from nnunetv2_text.evaluation.report import json_safe, md_table, run_jobs, write_csv
from nnunetv2_text.text.instructions import original_to_contiguous
from nnunetv2_text.utils.io import atomic_write_json, atomic_write_text, is_temporary

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
NUM_CLASSES = 13  # contiguous ids 1..13; 13 is TopCoW label 15 (3rd-A2)
ERROR_TYPES = ("none", "global_thickening", "global_thinning", "missing", "local_thickening", "local_thinning",
               "shortening", "disconnection", "fragmentation")
TABLE_COLUMNS = ["error_type", "n_cases", "dice_input", "dice_refined", "cldice_input", "cldice_refined",
                 "betti0_input", "betti0_refined", "dice_named_input", "dice_named_refined"]


@dataclass(frozen=True)
class CowTalkJob:
    case: str
    pred_file: Path
    ref_file: Path
    shape_files: Tuple[Path, ...]  # channel file of class 1..NUM_CLASSES
    error_types: Tuple[str, ...]
    #: original id -> contiguous id (refined maps are exported in the original ids, e.g. TopCoW's 15)
    to_contiguous: Tuple[Tuple[int, int], ...] = ()
    #: the classes the case's errors name (contiguous ids): the vessels its instruction asks to edit
    named: Tuple[int, ...] = ()


def _find(raw: Path, sub: str, name: str) -> Path:
    for split in ("Tr", "Ts"):
        p = raw / f"{sub}{split}" / name
        if p.is_file():
            return p
    raise EvaluationInputError(f"{raw}: neither {sub}Tr/{name} nor {sub}Ts/{name} exists")


def read_errors(path: Path, case: str) -> Tuple[Tuple[str, ...], Tuple[int, ...]]:
    """Distinct error types of a case's instruction file (no error listed means 'none') and the label ids
    (the file's own) its errors name."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        errors = obj["errors"]
        types = [str(e["type"]) for e in errors]
        labels = [int(e["label"]) for e in errors if e.get("label") is not None]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise EvaluationInputError(f"case '{case}': {path} has no valid 'errors' list ({e!r})") from None
    return tuple(dict.fromkeys(types)) or ("none",), tuple(dict.fromkeys(labels))


def plan_cowtalk(pred_folder: PathLike, ref_folder: PathLike, raw_folder: PathLike) -> List[CowTalkJob]:
    """Check every file a case needs (prediction, reference, 13 shape channels, instructions) and its geometry."""
    pred_folder, ref_folder, raw = Path(pred_folder), Path(ref_folder), Path(raw_folder)
    ds = read_json_input(raw / "dataset.json", "CoWTalk raw dataset.json")
    ending = ds.get("file_ending", ".nii.gz")
    first = 0 if (ds.get("cowtalk") or {}).get("no_image") else 1
    preds = sorted(p for p in pred_folder.glob(f"*{ending}") if not is_temporary(p))
    if not preds:
        raise EvaluationInputError(f"{pred_folder}: no refined label maps '*{ending}'")
    jobs = []
    for pred in preds:
        case = pred.name[: -len(ending)]
        ref = ref_folder / pred.name
        if not ref.is_file():
            raise EvaluationInputError(f"case '{case}': reference {ref} does not exist")
        check_same_geometry(pred, ref, case)
        shapes = tuple(_find(raw, "images", f"{case}_{first + k:04d}{ending}") for k in range(NUM_CLASSES))
        for s in shapes:
            check_same_geometry(s, ref, case)
        types, labels = read_errors(_find(raw, "instructions", f"{case}.json"), case)
        to_contiguous = original_to_contiguous(ds)
        named = tuple(to_contiguous.get(v, v) for v in labels)
        jobs.append(CowTalkJob(case, pred, ref, shapes, types, tuple(to_contiguous.items()), named))
    return jobs


def shape_scores(masks: Mapping[int, np.ndarray], ref: np.ndarray) -> Dict[str, float]:
    """Class-average Dice and Betti-0 error (classes present in either), and merged-mask clDice."""
    dices, bettis = [], []
    for k, m in masks.items():
        r = ref == k
        if not (m.any() or r.any()):
            continue
        dices.append(dice(m, r))
        bettis.append(betti0_error(m, r))
    merged = np.zeros(ref.shape, bool)
    for m in masks.values():
        merged |= m
    return {"dice": float(np.mean(dices)) if dices else math.nan,
            "cldice": cldice(merged, ref > 0),
            "betti0": float(np.mean(bettis)) if bettis else math.nan}


def evaluate_cowtalk_case(job: CowTalkJob) -> dict:
    """Scores of the erroneous input and of the refined output of one case (worker function)."""
    ref, _ = load_array(job.ref_file)
    pred, _ = load_array(job.pred_file)
    for original, contiguous in job.to_contiguous:
        pred = np.where(pred == original, contiguous, pred)
    classes = range(1, NUM_CLASSES + 1)
    inp = {k: load_array(f)[0] > 0 for k, f in zip(classes, job.shape_files)}
    out = {"case": job.case, "error_types": " ".join(job.error_types)}
    for tag, masks in (("input", inp), ("refined", {k: pred == k for k in classes})):
        for key, v in shape_scores(masks, ref).items():
            out[f"{key}_{tag}"] = v
        named = [dice(masks[k], ref == k) for k in job.named]
        out[f"dice_named_{tag}"] = float(np.mean(named)) if named else math.nan
    return out


def cowtalk_table(case_rows: Sequence[Mapping]) -> List[dict]:
    """Mean of every score per error type (a case with several types counts in each), then 'all'."""
    present = {t for r in case_rows for t in r["error_types"].split()}
    order = [t for t in ERROR_TYPES if t in present] + sorted(present - set(ERROR_TYPES)) + ["all"]
    table = []
    for t in order:
        rs = [r for r in case_rows if t == "all" or t in r["error_types"].split()]
        row = {"error_type": t, "n_cases": len(rs)}
        for col in TABLE_COLUMNS[2:]:
            vals = [r[col] for r in rs if math.isfinite(r[col])]
            row[col] = float(np.mean(vals)) if vals else math.nan
        table.append(row)
    return table


def evaluate_cowtalk(pred_folder: PathLike, ref_folder: PathLike, raw_folder: PathLike, out_folder: PathLike,
                     num_processes: int = 1) -> List[dict]:
    """Write cowtalk_table.csv, cowtalk_cases.csv, summary.json, report.md and cowtalk_heatmap.png."""
    jobs = plan_cowtalk(pred_folder, ref_folder, raw_folder)
    logger.info("CoWTalk evaluation of %d cases", len(jobs))
    case_rows = run_jobs(evaluate_cowtalk_case, jobs, num_processes)
    table = cowtalk_table(case_rows)
    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "cowtalk_table.csv", table, TABLE_COLUMNS)
    write_csv(out / "cowtalk_cases.csv", case_rows, ["case", "error_types"] + TABLE_COLUMNS[2:])
    fig = plots.cowtalk_heatmap(table, out / "cowtalk_heatmap.png")
    atomic_write_json(out / "summary.json", json_safe({
        "format": "nnunetv2_text.evaluation", "version": 1, "mode": "cowtalk",
        "settings": {"pred_folder": str(pred_folder), "ref_folder": str(ref_folder), "raw_folder": str(raw_folder)},
        "cowtalk": {r["error_type"]: {k: v for k, v in r.items() if k != "error_type"} for r in table},
        "figures": [fig.name]}))
    atomic_write_text(out / "report.md", render_cowtalk_report(table, fig.name, str(pred_folder)))
    return table


def render_cowtalk_report(table: Sequence[Mapping], figure: str, pred_folder: str) -> str:
    header = ["error type", "n", "Dice in", "Dice out", "clDice in", "clDice out", "Betti-0 in", "Betti-0 out",
              "named Dice in", "named Dice out"]
    rows = [[r[c] for c in TABLE_COLUMNS] for r in table]
    return ("# CoWTalk refinement report\n\n"
            f"Refined label maps `{pred_folder}`. 'in' = erroneous input shape, 'out' = refined output, both vs "
            "ground truth. Dice and Betti-0 error: mean over classes present in either mask; clDice: merged "
            "vessel mask; named Dice: mean Dice of the vessels the case's errors name. A case with several "
            "error types counts in each row.\n\n"
            "## Per error type\n\n" + md_table(header, rows) + f"\n![{figure}]({figure})\n")

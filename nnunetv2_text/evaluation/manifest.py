"""Reading and validating a prediction folder before any metric is computed.

Everything that can be wrong with the inputs (manifest, missing files, geometry, unknown prompts) is
checked here from file headers only, so that a bad input stops the evaluation before it writes anything.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from nnunetv2_text.errors import UserInputError
from nnunetv2_text.utils.image_header import Geometry, read_geometry
from nnunetv2_text.text.sources import CaseSources
from nnunetv2_text.text.vocabulary import Concept, Vocabulary, normalize_term

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "nnunetv2_text.manifest"


class EvaluationInputError(UserInputError):
    """Bad evaluation input; the message names the file and the case."""


def check_same_geometry(path_a: Path, path_b: Path, case: str) -> Geometry:
    """Raise naming both files and the case when two images are not on the same voxel grid."""
    ga, gb = read_geometry(path_a), read_geometry(path_b)
    diff = ga.mismatch(gb)
    if diff is not None:
        raise EvaluationInputError(f"case '{case}': {path_a} and {path_b} have different geometry ({diff})")
    return ga


def load_array(path: Union[str, Path]) -> Tuple[np.ndarray, Tuple[float, float, float]]:
    """Voxel array in (z, y, x) order and the spacing in the same order (SimpleITK gives x, y, z)."""
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), tuple(float(s) for s in reversed(img.GetSpacing()))


@dataclass(frozen=True)
class PredictionEntry:
    prompt: str
    file: Path


@dataclass
class Manifest:
    folder: Path
    file_ending: str
    model: dict
    cases: Dict[str, List[PredictionEntry]]
    #: the manifest's own entries, case -> prompt -> {file, voxels, understood, flag, ...} (overlay legends)
    records: Dict[str, Dict[str, dict]] = field(default_factory=dict)

    def prompts(self) -> List[str]:
        seen: Dict[str, None] = {}
        for entries in self.cases.values():
            for e in entries:
                seen.setdefault(e.prompt, None)
        return list(seen)


def read_json_input(path: Union[str, Path], what: str):
    """Load a user-supplied JSON file; errors name the file and say what it was meant to be."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvaluationInputError(f"{path}: not valid UTF-8 JSON ({e})") from None


def read_manifest(pred_folder: Union[str, Path]) -> Manifest:
    """Parse ``manifest.json`` and check that every mask it names exists."""
    folder = Path(pred_folder)
    path = folder / MANIFEST_NAME
    obj = read_json_input(path, "prediction manifest")
    if not isinstance(obj, dict) or obj.get("format") != MANIFEST_FORMAT:
        raise EvaluationInputError(f"{path}: 'format' must be '{MANIFEST_FORMAT}'")
    if obj.get("version") != 1:
        raise EvaluationInputError(f"{path}: unsupported manifest version {obj.get('version')!r}")
    cases_obj = obj.get("cases")
    if not isinstance(cases_obj, dict) or not cases_obj:
        raise EvaluationInputError(f"{path}: 'cases' must be a non-empty object")
    cases: Dict[str, List[PredictionEntry]] = {}
    for case, prompts in sorted(cases_obj.items()):
        if not isinstance(prompts, dict):
            raise EvaluationInputError(f"{path}: case '{case}': expected an object of prompts")
        entries = []
        for prompt, info in prompts.items():
            if not isinstance(info, dict) or not isinstance(info.get("file"), str):
                raise EvaluationInputError(f"{path}: case '{case}', prompt '{prompt}': missing 'file'")
            f = folder / info["file"]
            if not f.is_file():
                raise EvaluationInputError(
                    f"{path}: case '{case}', prompt '{prompt}': mask file {f} does not exist")
            entries.append(PredictionEntry(prompt, f))
        cases[case] = entries
    return Manifest(folder, str(obj.get("file_ending", ".nii.gz")), dict(obj.get("model") or {}), cases,
                    {case: dict(cases_obj[case]) for case in cases})


def resolve_prompts(prompts: List[str], vocab: Vocabulary,
                    paraphrases: Optional[Mapping[str, str]] = None) -> Dict[str, Concept]:
    """Concept of every prompt: the paraphrase map (normalized wording -> concept id) first, then the vocabulary."""
    out: Dict[str, Concept] = {}
    for p in prompts:
        cid = (paraphrases or {}).get(normalize_term(p))
        concept = vocab.concept(cid) if cid is not None else vocab.lookup(p)
        if concept is None:
            raise EvaluationInputError(
                f"prompt '{p}' is neither a term of vocabulary '{vocab.name}' ({vocab.source}) nor a wording of the "
                "paraphrase file")
        out[p] = concept
    return out


@dataclass(frozen=True)
class PromptJob:
    prompt: str
    concept_id: str
    labels: Tuple[int, ...]
    pred_file: Path
    tubular: bool
    counterpart_labels: Optional[Tuple[int, ...]] = None


@dataclass(frozen=True)
class CaseJob:
    case: str
    ref_file: Path
    prompts: Tuple[PromptJob, ...]
    tolerance_mm: float


def plan_cases(manifest: Manifest, ref_folder: Union[str, Path], concepts: Mapping[str, Concept],
               tubular: Optional[set], counterparts: Mapping[str, Tuple[int, ...]],
               tolerance_mm: float) -> List[CaseJob]:
    """One job per case, after checking that each reference exists and shares each mask's grid.

    ``tubular`` None means every concept; ``counterparts`` maps a concept id to its mirror's labels.
    """
    ref_folder = Path(ref_folder)
    jobs = []
    for case, entries in manifest.cases.items():
        ref = ref_folder / f"{case}{manifest.file_ending}"
        if not ref.is_file():
            raise EvaluationInputError(f"case '{case}': reference {ref} does not exist")
        prompt_jobs = []
        for e in entries:
            check_same_geometry(e.file, ref, case)
            c = concepts[e.prompt]
            prompt_jobs.append(PromptJob(e.prompt, c.id, tuple(c.labels), e.file,
                                         tubular is None or c.id in tubular, counterparts.get(c.id)))
        jobs.append(CaseJob(case, ref, tuple(prompt_jobs), float(tolerance_mm)))
    return jobs


def drop_unannotated(jobs: List[CaseJob], sources: Optional[CaseSources]) -> Tuple[List[CaseJob], int]:
    """Leave out (case, prompt) pairs whose concept the case's source does not annotate (a merged,
    partially labelled dataset: there the reference cannot say whether the structure is present).
    Returns the remaining jobs and how many pairs were left out."""
    if sources is None:
        return jobs, 0
    out, skipped = [], 0
    for j in jobs:
        annotated = sources.annotated(j.case)
        kept = tuple(p for p in j.prompts if p.concept_id in annotated)
        skipped += len(j.prompts) - len(kept)
        if kept:
            out.append(CaseJob(j.case, j.ref_file, kept, j.tolerance_mm))
    return out, skipped

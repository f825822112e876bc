"""Templated error descriptions and corrective instructions, and the per-case instruction files.

Directions follow one fixed convention: the head is viewed from behind (posterior view, looking
anteriorly), so the patient's left is on the viewer's left and "left"/"right" never flip with the
viewer; "proximal" is the end where the blood enters the segment (BA/ICA: the inferior end; other
segments: the end at their parent vessel) and "distal" the other end. The Acom, which has no inflow
end, is described by its right and left ends instead.

Per-case file (``instructionsTr/<case_id>.json``, UTF-8)::

    {"case_id", "subject", "modality", "variant", "seed",
     "errors": [{"type", "label" (TopCoW id or null for "none"), "class_name", "params",
                 "description", "instruction_short", "instruction_long",
                 "inverse_short", "inverse_long"}],   # the last two only where the edit has an inverse
     "instruction_short", "instruction_long"}   # the errors' sentences joined by spaces
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Union

import numpy as np

from nnunetv2_text.text.instructions import NO_CHANGE_LONG, NO_CHANGE_SHORT
from nnunetv2_text.text.instructions import load_instruction_file as _load
from nnunetv2_text.text.instructions import validate_record as _validate

from .constants import CLASS_TERMS, ERROR_TYPES, TOPCOW_LABELS

logger = logging.getLogger(__name__)

_DESCRIPTION = {
    "none": "Viewed from behind, every vessel segment is correct.",
    "global_thickening": "Viewed from behind, the {full} is too thick along its whole length (dilated by {n} {vox}).",
    "global_thinning": "Viewed from behind, the {full} is too thin along its whole length (eroded by {n} {vox}).",
    "missing": "Viewed from behind, the {full} is missing from the segmentation.",
    "local_thickening": "Viewed from behind, the {loc} of the {full} ({lo}% to {hi}% of its length from its {end}) "
                        "is too thick: its radius is about {ratio} times normal.",
    "local_thinning": "Viewed from behind, the {loc} of the {full} ({lo}% to {hi}% of its length from its {end}) "
                      "is too thin: its radius is about {pct_kept}% of normal.",
    "shortening": "Viewed from behind, the {full} stops short: everything beyond {lo}% of its length from its "
                  "{end} is missing.",
    "disconnection": "Viewed from behind, the {full} is interrupted by a gap at {lo}% to {hi}% of its length "
                     "from its {end}.",
    "fragmentation": "Viewed from behind, the {full} is broken into {k} pieces by gaps at {gaps} of its length "
                     "from its {end}.",
}

_SHORT = {
    "none": list(NO_CHANGE_SHORT),
    "global_thickening": ["Thin the {short}.", "Make the {short} thinner.", "Reduce the thickness of the {short}."],
    "global_thinning": ["Thicken the {short}.", "Make the {short} thicker.", "Widen the {short}."],
    "missing": ["Add the {short}.", "Segment the missing {short}.", "The {short} is missing; add it."],
    "local_thickening": ["Thin the {short} locally.", "Make part of the {short} thinner.",
                         "Slim down the {short} where it bulges."],
    "local_thinning": ["Thicken the {short} locally.", "Make the {short} thicker where it narrows.",
                       "Widen the narrowed part of the {short}."],
    "shortening": ["Extend the {short}.", "Lengthen the {short}.", "The {short} is too short; extend it."],
    "disconnection": ["Reconnect the {short}.", "Close the gap in the {short}.", "Join the two pieces of the {short}."],
    "fragmentation": ["Connect the fragments of the {short}.", "Join the pieces of the {short} into one vessel.",
                      "Repair the broken {short}."],
}

_LONG = {
    "none": list(NO_CHANGE_LONG),
    "global_thickening": ["The {full} is too thick along its whole length; thin it by about {n} {vox}.",
                          "Along its entire course the {full} is dilated; shrink it inward by about {n} {vox}.",
                          "Make the whole {full} thinner, by about {n} {vox} in radius."],
    "global_thinning": ["The {full} is too thin along its whole length; thicken it by about {n} {vox}.",
                        "Along its entire course the {full} is eroded; grow it outward by about {n} {vox}.",
                        "Make the whole {full} thicker, by about {n} {vox} in radius."],
    "missing": ["The {full} is missing; segment it along its full course from its {end} to its {far_end}.",
                "Add the whole {full}, which is absent from the segmentation.",
                "No voxel of the {full} is labelled; add the complete vessel."],
    "local_thickening": ["The {loc} of the {full} is too thick; thin it by about {n} {vox}.",
                         "Between {lo}% and {hi}% of its length from its {end}, the {full} bulges; reduce its "
                         "radius there by about {n} {vox}.",
                         "Thin the {full} in its {loc} ({lo}% to {hi}% from its {end}) by about {n} {vox}."],
    "local_thinning": ["The {loc} of the {full} is too thin; thicken it by about {n} {vox}.",
                       "Between {lo}% and {hi}% of its length from its {end}, the {full} is narrowed; widen its "
                       "radius there by about {n} {vox}.",
                       "Thicken the {full} in its {loc} ({lo}% to {hi}% from its {end}) by about {n} {vox}."],
    "shortening": ["The {full} ends too early; extend it beyond {lo}% of its length from its {end} to its full length.",
                   "The {far} {rest}% of the {full} is missing; continue the vessel past the point where it stops.",
                   "Lengthen the {full}: the part beyond {lo}% of its length from its {end} has to be added back."],
    "disconnection": ["The {full} is interrupted in its {loc}, {lo}% to {hi}% of its length from its {end}; "
                      "close the gap.",
                      "Fill the gap in the {full} at {lo}% to {hi}% from its {end} so that it is one continuous vessel.",
                      "Reconnect the {full}: there is a break in its {loc}."],
    "fragmentation": ["The {full} is broken into {k} pieces (gaps at {gaps} of its length from its {end}); "
                      "join them into one continuous vessel.",
                      "Fill the {g} gaps in the {full} at {gaps} from its {end}.",
                      "Reconnect the fragments of the {full}; it should be one continuous vessel, not {k} pieces."],
}


#: instructions that ask for an error instead of its repair: the same vessel and span, the opposite edit. A
#: refiner trained on (correct shape, inverse instruction) -> erroneous shape as well as on the repair pairs
#: cannot tell the direction from the shape alone and must read the verb (docs/COWTALK.md). Thickening and
#: thinning ask for each other's repair; disconnection and fragmentation have no inverse edit
#: (:data:`nnunetv2_text.text.instructions.INVERSE_EDIT`).
_INVERSE_OF = {"global_thickening": "global_thinning", "global_thinning": "global_thickening",
               "local_thickening": "local_thinning", "local_thinning": "local_thickening"}
_INVERSE_SHORT = {
    "missing": ["Remove the {short}.", "Delete the {short}.", "Erase the {short} from the segmentation."],
    "shortening": ["Shorten the {short}.", "Trim the {short} back.", "Cut the {short} short."],
}
_INVERSE_LONG = {
    "missing": ["Remove the whole {full} from the segmentation.",
                "Delete every voxel of the {full}; it should not be labelled.",
                "Erase the {full} along its full course from its {end} to its {far_end}."],
    "shortening": ["Shorten the {full} so that it ends at {lo}% of its length from its {end}.",
                   "Trim the {full} back so that it stops at {lo}% of its length from its {end}.",
                   "Cut the distal {rest}% off the {full}."],
}
INVERTIBLE_ERROR_TYPES = tuple(_INVERSE_OF) + tuple(_INVERSE_SHORT)


def _ends(label: int) -> Dict[str, str]:
    if label == 10:  # the Acom has no inflow end: name its ends by side (posterior view)
        return {"end": "right end", "far_end": "left end", "near": "right", "far": "left", "mid": "middle"}
    return {"end": "proximal end", "far_end": "distal end", "near": "proximal", "far": "distal", "mid": "middle"}


def location_phrase(label: int, lo: float, hi: float) -> str:
    """'proximal third' / 'middle third' / 'distal third' (Acom: 'right third' ...) of the span's centre."""
    ends = _ends(label)
    centre = (lo + hi) / 2.0
    word = ends["near"] if centre < 100.0 / 3.0 else ends["mid"] if centre <= 200.0 / 3.0 else ends["far"]
    return f"{word} third"


def _fields(error: Mapping[str, Any]) -> Dict[str, Any]:
    label = error.get("label")
    if label is None:
        return {}
    full, short = CLASS_TERMS[int(label)]
    p = error.get("params", {})
    out: Dict[str, Any] = {"full": full, "short": short, **_ends(int(label))}
    t = error["type"]
    if t in ("global_thickening", "global_thinning"):
        out["n"] = int(p["radius"])
    if "range_pct" in p:
        lo, hi = p["range_pct"]
        out.update(lo=int(round(lo)), hi=int(round(hi)), rest=int(round(100 - lo)), loc=location_phrase(int(label), lo, hi))
    if t == "local_thickening":
        out.update(n=max(1, int(round(p["radius"] - p["local_radius"]))),
                   ratio=f"{p['radius'] / p['local_radius']:.1f}")
    if t == "local_thinning":
        out.update(n=max(1, int(round(p["local_radius"] - p["radius"]))),
                   pct_kept=int(round(100 * p["radius"] / p["local_radius"])))
    if t == "fragmentation":
        gaps = [f"{int(round(a))}% to {int(round(b))}%" for a, b in p["gaps_pct"]]
        out.update(g=len(gaps), k=len(gaps) + 1, gaps=", ".join(gaps[:-1]) + " and " + gaps[-1])
    if "n" in out:
        out["vox"] = "voxel" if out["n"] == 1 else "voxels"
    return out


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def describe_error(error: Mapping[str, Any], rng: np.random.Generator) -> Dict[str, str]:
    """Description, short and long corrective instruction of one error; paraphrases chosen with ``rng``."""
    t = error["type"]
    if t not in ERROR_TYPES:
        raise ValueError(f"unknown error type '{t}'")
    fields = _fields(error)
    short = _SHORT[t][int(rng.integers(len(_SHORT[t])))]
    long = _LONG[t][int(rng.integers(len(_LONG[t])))]
    return {"description": _capitalize(_DESCRIPTION[t].format(**fields)),
            "instruction_short": _capitalize(short.format(**fields)),
            "instruction_long": _capitalize(long.format(**fields))}


def describe_inverse(error: Mapping[str, Any], rng: np.random.Generator) -> Dict[str, str]:
    """Short and long instruction that ask for ``error`` itself on the correct shape ({} when the error
    type has no inverse edit); paraphrases chosen with ``rng``."""
    t = error["type"]
    if t not in INVERTIBLE_ERROR_TYPES:
        return {}
    fields = _fields(error)
    shorts = _SHORT[_INVERSE_OF[t]] if t in _INVERSE_OF else _INVERSE_SHORT[t]
    longs = _LONG[_INVERSE_OF[t]] if t in _INVERSE_OF else _INVERSE_LONG[t]
    return {"inverse_short": _capitalize(shorts[int(rng.integers(len(shorts)))].format(**fields)),
            "inverse_long": _capitalize(longs[int(rng.integers(len(longs)))].format(**fields))}


def make_record(case_id: str, subject: str, modality: str, variant: int, seed: int,
                errors: Sequence[Mapping[str, Any]], rng: np.random.Generator) -> Dict[str, Any]:
    """The per-case instruction object (format in the module docstring)."""
    entries = []
    inverse_rng = np.random.default_rng([seed, 2])  # its own stream: the repair sentences stay as they were
    for e in errors:
        label = e.get("label")
        entries.append({"type": e["type"], "label": None if label is None else int(label),
                        "class_name": None if label is None else TOPCOW_LABELS[int(label)],
                        "params": dict(e.get("params", {})), **describe_error(e, rng),
                        **describe_inverse(e, inverse_rng)})
    return {"case_id": case_id, "subject": subject, "modality": modality, "variant": int(variant),
            "seed": int(seed), "errors": entries,
            "instruction_short": " ".join(e["instruction_short"] for e in entries),
            "instruction_long": " ".join(e["instruction_long"] for e in entries)}


def validate_record(obj: Any, source: str = "<record>") -> Dict[str, Any]:
    """The package's check of an instruction record, with TopCoW's label ids."""
    return _validate(obj, source, TOPCOW_LABELS)


def load_instruction_file(path: Union[str, Path]) -> Dict[str, Any]:
    """Read and validate one ``instructions{Tr,Ts}/<case_id>.json`` (the package's reader, TopCoW's labels)."""
    return _load(path, TOPCOW_LABELS)


def load_case_instructions(dataset_folder: Union[str, Path], case_id: str) -> Dict[str, Any]:
    """Instruction record of ``case_id`` from ``instructionsTr/`` or ``instructionsTs/`` of a CoWTalk dataset."""
    for sub in ("instructionsTr", "instructionsTs"):
        path = Path(dataset_folder) / sub / f"{case_id}.json"
        if path.is_file():
            return load_instruction_file(path)
    raise FileNotFoundError(f"{dataset_folder}: no instruction file for case '{case_id}'")


def load_variants(dataset_folder: Union[str, Path]) -> List[Dict[str, Any]]:
    """All records of ``cowtalk_variants.json`` (train and test), validated."""
    path = Path(dataset_folder) / "cowtalk_variants.json"
    obj = json.loads(path.read_text(encoding="utf-8"))
    return [validate_record(r, f"{path}: record {i}") for i, r in enumerate(obj["records"])]

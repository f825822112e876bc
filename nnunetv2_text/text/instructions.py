"""Corrective instructions of a refinement dataset (CoWTalk), prepared for training like a vocabulary.

The conversion writes one JSON per case (``instructionsTr/<case>.json``, format in docs/COWTALK.md).
``nnUNetv2_text_embed`` condenses them into ``text/instructions.json`` in the preprocessed dataset::

    {"<case>": [{"type": "local_thinning", "label": 5, "short": "...", "long": "...",
                 "inverse": {"short": "...", "long": "..."}}, ...]}

with labels already in the dataset's contiguous ids (``inverse``: the instruction that asks for the error
itself, where the edit has an inverse), and caches the embedding of every text training can ask for: for
each case the join of every non-empty subset of its errors' instructions (errors may be dropped, left
uncorrected or asked for in reverse during training), short and long, plus :data:`NO_CHANGE`.
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Union

import numpy as np

from nnunetv2_text.errors import UserInputError

#: error types of an instruction record ("none": the shape is unchanged)
GLOBAL_ERROR_TYPES = ("global_thickening", "global_thinning", "missing")
LOCAL_ERROR_TYPES = ("local_thickening", "local_thinning", "shortening", "disconnection", "fragmentation")
ERROR_TYPES = ("none",) + GLOBAL_ERROR_TYPES + LOCAL_ERROR_TYPES
RECORD_KEYS = ("case_id", "subject", "modality", "variant", "seed", "errors", "instruction_short", "instruction_long")
ERROR_KEYS = ("type", "label", "class_name", "params", "description", "instruction_short", "instruction_long")
#: optional keys of an error: an instruction asking for the error itself (written where the edit has an
#: inverse; datasets converted before they existed have none and train on repairs only)
INVERSE_KEYS = ("inverse_short", "inverse_long")
NO_CHANGE = "The segmentation is correct; leave it unchanged."
INSTRUCTIONS_FILE = "instructions.json"
#: the sentences of the conversion's "none" variants: instructions that ask for no edit. A refiner answers
#: them (and an empty instruction) by returning its input, without running the network
NO_CHANGE_SHORT = (NO_CHANGE, "No correction is needed.", "Keep the segmentation as it is.",
                   "Nothing to fix; leave the vessels unchanged.")
NO_CHANGE_LONG = ("All vessel segments look correct, so leave the segmentation unchanged.",
                  "The segmentation matches the anatomy; make no changes.",
                  "Every segment is complete and correctly sized; keep the segmentation unchanged.")
_NO_CHANGE_KEYS = {" ".join(t.casefold().rstrip(".!").split()) for t in NO_CHANGE_SHORT + NO_CHANGE_LONG}


def is_no_change(instruction: str) -> bool:
    """True for an empty instruction or one of the no-edit sentences (case and spacing ignored)."""
    key = " ".join(instruction.casefold().strip().rstrip(".!").split())
    return not key or key in _NO_CHANGE_KEYS


#: the edits a corrective instruction may ask for; an edit and its inverse undo each other
EDITS = ("thicken", "thin", "extend", "shorten", "reconnect", "add", "remove_fragment", "remove")
INVERSE_EDIT = {"thicken": "thin", "thin": "thicken", "extend": "shorten", "shorten": "extend", "add": "remove",
                "remove": "add"}
#: the verb that opens a clause -> the edit it asks for (``None``: decided by the rest of the clause)
_VERBS = {
    **dict.fromkeys(("thicken", "widen", "broaden", "enlarge", "dilate", "fatten", "grow", "expand"), "thicken"),
    **dict.fromkeys(("thin", "slim", "narrow", "shrink", "erode"), "thin"),
    **dict.fromkeys(("extend", "lengthen", "continue", "prolong", "elongate"), "extend"),
    **dict.fromkeys(("shorten", "truncate", "trim", "cut", "clip"), "shorten"),
    **dict.fromkeys(("reconnect", "connect", "join", "close", "fill", "bridge", "repair", "link", "merge"), "reconnect"),
    **dict.fromkeys(("add", "segment", "draw", "restore", "include", "label"), "add"),
    **dict.fromkeys(("remove", "delete", "erase", "discard"), None),
    **dict.fromkeys(("make", "reduce", "decrease", "increase", "lower", "raise"), None),
}
_COMPARATIVES = {"thinner": "thin", "narrower": "thin", "slimmer": "thin", "thicker": "thicken", "wider": "thicken",
                 "broader": "thicken", "longer": "extend", "shorter": "shorten", "continuous": "reconnect"}
_SIZE_WORDS = {"thickness": "thin", "radius": "thin", "width": "thin", "diameter": "thin", "caliber": "thin",
               "length": "shorten"}
_FRAGMENT_WORDS = {"fragment", "fragments", "island", "islands", "piece", "pieces", "blob", "stray", "spurious"}
_FILLERS = {"please", "then", "now", "also", "and", "so", "just", "simply"}


def _clause_edit(words: List[str]) -> Optional[str]:
    """The edit of one clause, read from the imperative verb that opens it (None: it asks for none)."""
    while words and words[0] in _FILLERS:
        words = words[1:]
    if not words or words[0] not in _VERBS:
        return None
    verb, rest = words[0], set(words[1:])
    if _VERBS[verb] is not None:
        return _VERBS[verb]
    if verb in ("remove", "delete", "erase", "discard"):
        return "remove_fragment" if rest & _FRAGMENT_WORDS else "remove"
    if verb == "make":
        return next((_COMPARATIVES[w] for w in words[1:] if w in _COMPARATIVES), None)
    size = next((_SIZE_WORDS[w] for w in words[1:] if w in _SIZE_WORDS), None)
    if size is None:
        return None
    grow = verb in ("increase", "raise")
    return INVERSE_EDIT[size] if grow else size


def read_edits(instruction: str) -> List[str]:
    """The edits an instruction asks for, in order (``["none"]`` for a no-change sentence): each clause
    (split at '.', ';' and ':') is read from the imperative verb that opens it, so a description such as
    "the MCA is too thin" asks for nothing and "thicken it" for a thickening. Verbs, not vessels: which
    vessel a round edits is the vocabulary's business (:meth:`Refiner.named_classes`)."""
    if is_no_change(instruction):
        return ["none"]
    out: List[str] = []
    for clause in re.split(r"[.;:!?]", instruction.casefold()):
        edit = _clause_edit(re.findall(r"[a-z]+", clause))
        if edit is not None and edit not in out:
            out.append(edit)
    return out


#: edits that only add voxels to the vessel they name, and edits that only take voxels away
GROWING_EDITS = ("thicken", "extend", "reconnect", "add")
SHRINKING_EDITS = ("thin", "shorten", "remove", "remove_fragment")


def edit_directions(instruction: str, vocabulary) -> Dict[int, Set[str]]:
    """Class id -> the ways ("grow", "shrink") the instruction's verbs move it, read per sentence:
    "The left MCA is too thin; thicken it." names the vessel in one clause and the verb in the next, and a
    joined instruction holds one sentence per error. Vessels are the ``vocabulary``'s mentions
    (:meth:`Vocabulary.mentions`). The refiner's scope and its direction channels read instructions alike."""
    out: Dict[int, Set[str]] = {}
    for sentence in re.split(r"(?<=[.!?])\s+", instruction):
        edits = read_edits(sentence)
        ways = {"grow" for e in edits if e in GROWING_EDITS} | {"shrink" for e in edits if e in SHRINKING_EDITS}
        for c in vocabulary.mentions(sentence):
            for v in c.labels:
                out.setdefault(v, set()).update(ways)
    return {v: w for v, w in out.items() if w}


def direction_vector(directions: Mapping[int, Set[str]], num_classes: int) -> np.ndarray:
    """The refiner's direction channels for one instruction, before they are spread over the image: for each
    class 1..num_classes-1 in turn, 1.0 where the instruction grows it, then 1.0 where it shrinks it."""
    v = np.zeros(2 * (num_classes - 1), np.float32)
    for c, ways in directions.items():
        if 0 < c < num_classes:
            v[2 * (c - 1)] = float("grow" in ways)
            v[2 * (c - 1) + 1] = float("shrink" in ways)
    return v


def instruction_directions(instructions: Sequence[str], vocabulary, num_classes: int) -> np.ndarray:
    """(len(instructions), 2 (K-1)): each instruction's :func:`direction_vector`, the values a refiner with
    ``direction_channels`` reads as constant input planes. The trainer, its validation and the refiner all
    read instructions here, so training and prediction read an instruction alike."""
    return np.stack([direction_vector(edit_directions(t, vocabulary), num_classes) for t in instructions])


def contiguous_to_original(dataset_json: dict) -> Dict[int, int]:
    """A refinement dataset's label mapping (e.g. 13 -> TopCoW's 15); ids not listed are unchanged."""
    mapping = (dataset_json.get("cowtalk") or {}).get("label_mapping") or {}
    return {int(k): int(v) for k, v in mapping.items()}


def original_to_contiguous(dataset_json: dict) -> Dict[int, int]:
    return {v: k for k, v in contiguous_to_original(dataset_json).items()}


def contiguous_id(to_contiguous: Dict[int, int], original: int) -> int:
    """The dataset's id for an original label id: ids the mapping does not list are already contiguous."""
    return to_contiguous.get(int(original), int(original))


def join_instructions(errors: Sequence[dict], kind: str) -> str:
    """One instruction text for the given errors ('short' or 'long'); none left -> :data:`NO_CHANGE`."""
    return " ".join(e[kind] for e in errors) if errors else NO_CHANGE


def validate_record(obj: Any, source: str = "<record>", labels: Collection[int] = ()) -> Dict[str, Any]:
    """Check an instruction record's keys and values (``labels``: the label ids an error may name, in the
    file's own convention; empty: any); the error names ``source`` and the key at fault."""
    if not isinstance(obj, dict):
        raise UserInputError(f"{source}: expected a JSON object")
    for key in RECORD_KEYS:
        if key not in obj:
            raise UserInputError(f"{source}: missing key '{key}'")
    if not isinstance(obj["errors"], list) or not obj["errors"]:
        raise UserInputError(f"{source}: 'errors' must be a non-empty list")
    for i, e in enumerate(obj["errors"]):
        for key in ERROR_KEYS:
            if not isinstance(e, dict) or key not in e:
                raise UserInputError(f"{source}: errors[{i}] misses key '{key}'")
        for key in INVERSE_KEYS:
            if key in e and not (isinstance(e[key], str) and e[key].strip()):
                raise UserInputError(f"{source}: errors[{i}] has '{key}' {e[key]!r}, not a sentence")
        if e["type"] not in ERROR_TYPES:
            raise UserInputError(f"{source}: errors[{i}] has unknown type '{e['type']}'")
        if (e["label"] is None) != (e["type"] == "none") or (e["label"] is not None and labels
                                                             and e["label"] not in labels):
            raise UserInputError(f"{source}: errors[{i}] has label {e['label']!r}, which does not fit type "
                                 f"'{e['type']}'")
    return obj


def load_instruction_file(path: Union[str, Path], labels: Collection[int] = ()) -> Dict[str, Any]:
    """Read and validate one ``instructions{Tr,Ts}/<case_id>.json``: the one reader of the format, for the
    conversion's checks and for ``nnUNetv2_text_embed`` alike."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserInputError(f"{path}: cannot read instruction file ({e})") from None
    return validate_record(obj, str(path), labels)


def read_case_instructions(raw_dataset: Path, dataset_json: dict, folders: Iterable[str] = ("instructionsTr",
                                                                                             "instructionsTs")
                           ) -> Dict[str, List[dict]]:
    """Case -> its errors with contiguous label ids (``"none"`` variants keep their own sentence)."""
    to_contiguous = original_to_contiguous(dataset_json)
    out: Dict[str, List[dict]] = {}
    for sub in folders:
        folder = Path(raw_dataset) / sub
        if not folder.is_dir():
            continue
        for f in sorted(folder.glob("*.json")):
            rec = load_instruction_file(f)
            out[rec["case_id"]] = [
                {"type": e["type"], "label": None if e["label"] is None else contiguous_id(to_contiguous, e["label"]),
                 "short": e["instruction_short"], "long": e["instruction_long"],
                 **({"inverse": {"short": e["inverse_short"], "long": e["inverse_long"]}}
                    if all(k in e for k in INVERSE_KEYS) else {})} for e in rec["errors"]]
    return out


def inverted(error: dict) -> dict:
    """The error asked for instead of repaired: its inverse sentences in place of the repair's."""
    return {**error, **error["inverse"]}


def all_instruction_texts(cases: Dict[str, List[dict]]) -> List[str]:
    """Every text training can ask for: per case, the join of every non-empty subset of its errors, each
    error as its repair or (where it has one) its inverse, short and long, plus :data:`NO_CHANGE`."""
    texts = {NO_CHANGE: None}
    for errors in cases.values():
        real = [e for e in errors if e["type"] != "none"]
        for e in errors:
            if e["type"] == "none":
                texts[e["short"]] = texts[e["long"]] = None
        for k in range(1, len(real) + 1):
            for subset in itertools.combinations(real, k):
                ways = [(e, inverted(e)) if "inverse" in e else (e,) for e in subset]
                for directed in itertools.product(*ways):
                    for kind in ("short", "long"):
                        texts[join_instructions(directed, kind)] = None
    return list(texts)

"""Prompt files (no torch here): which prompts to run on which case.

Formats:
- plain text: one prompt per line, used for every case (blank lines are skipped);
- JSON: ``{"prompts": [...]}`` for every case and/or ``{"cases": {"<case_id>": [...]}}`` per case.
  A case gets the global prompts followed by its own, duplicates removed.

Errors name the file (and case / prompt) at fault and are raised before anything is written.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

from nnunetv2_text.errors import UserInputError


#: what ``--on_unknown`` may say about a prompt whose nearest training term is not similar enough
ON_UNKNOWN = ("warn", "empty", "error")
#: a prompt whose nearest training term is less similar than this (cosine after centring) is "unknown";
#: chosen from the toy measurement in docs/RESULTS.md
DEFAULT_MIN_SIMILARITY = 0.3
#: a prompt is also unknown when its nearest training term beats the mean similarity of its
#: FOREIGN_NEIGHBOURS nearest foreign-pool phrases (texts the model was taught to answer with nothing) by
#: less than this margin. The mean of several neighbours, not the nearest one, so that a single odd pool
#: phrase ("glarb tissue" against "GM tissue") cannot veto a wording; both chosen from the measurement in
#: docs/RESULTS.md (language robustness)
FOREIGN_NEIGHBOURS = 10
#: what the network is given for a known prompt: its own embedding, or that of its nearest training term
#: (the answer then depends on what the prompt was understood as, not on its wording; unknown prompts
#: keep their own embedding)
WORDINGS = ("as_written", "nearest_term")
#: nearest_term: a network trained on a vocabulary answers its terms best, and wordings it never saw
#: lost their structure as written (toy and MNI152, docs/RESULTS.md, language robustness)
DEFAULT_WORDING = "nearest_term"
DEFAULT_MIN_MARGIN = 0.06


class PromptFileError(UserInputError):
    """A prompt or instruction file is unreadable or names cases or prompts that do not fit."""


@dataclass
class PromptSpec:
    source: str
    common: List[str] = field(default_factory=list)
    per_case: Dict[str, List[str]] = field(default_factory=dict)

    def prompts_for(self, case_id: str) -> List[str]:
        return list(dict.fromkeys(self.common + self.per_case.get(case_id, [])))

    def all_prompts(self) -> List[str]:
        return list(dict.fromkeys(self.common + [p for ps in self.per_case.values() for p in ps]))

    def check_cases(self, case_ids: Iterable[str]) -> None:
        """Every case named in the file must be among the inputs; every input must get a prompt."""
        case_ids = list(case_ids)
        unknown = sorted(set(self.per_case) - set(case_ids))
        if unknown:
            raise PromptFileError(f"{self.source}: case '{unknown[0]}' is not among the input cases "
                                  f"({len(case_ids)} inputs, e.g. {case_ids[:3]})")
        for c in case_ids:
            if not self.prompts_for(c):
                raise PromptFileError(f"{self.source}: no prompt for case '{c}'")


def _check_prompt(p, source: str, where: str) -> str:
    if not isinstance(p, str):
        raise PromptFileError(f"{source}: {where}: prompt {p!r} is not a string")
    if not p.strip():
        raise PromptFileError(f"{source}: {where}: empty prompt")
    return p.strip()


def parse_prompt_text(text: str, source: str = "<prompts>") -> PromptSpec:
    stripped = text.lstrip("\ufeff").strip()
    if source.lower().endswith(".json") or stripped.startswith("{") or stripped.startswith("["):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise PromptFileError(f"{source}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
        if isinstance(obj, list):
            obj = {"prompts": obj}
        if not isinstance(obj, dict) or not ({"prompts", "cases"} & set(obj)):
            raise PromptFileError(f"{source}: JSON must be an object with 'prompts' and/or 'cases'")
        common = obj.get("prompts", [])
        if not isinstance(common, list):
            raise PromptFileError(f"{source}: 'prompts' must be a list")
        spec = PromptSpec(source, [_check_prompt(p, source, f"prompt #{i}") for i, p in enumerate(common)])
        cases = obj.get("cases", {})
        if not isinstance(cases, dict):
            raise PromptFileError(f"{source}: 'cases' must map case ids to lists of prompts")
        for case, ps in cases.items():
            if not isinstance(ps, list):
                raise PromptFileError(f"{source}: case '{case}': expected a list of prompts")
            spec.per_case[case] = [_check_prompt(p, source, f"case '{case}' prompt #{i}") for i, p in enumerate(ps)]
    else:
        spec = PromptSpec(source, [line.strip() for line in stripped.splitlines() if line.strip()])
    if not spec.all_prompts():
        raise PromptFileError(f"{source}: no prompts")
    return spec


#: a prompt that stands for every single-label concept of the model's vocabulary, by its main term
#: (``--prompts all``, or a line ``all`` in a prompt file; :func:`nnunetv2_text.inference.plan.expand_all`)
ALL = "all"


def is_all(prompt: str) -> bool:
    return prompt.strip().lower() == ALL


def read_prompt_file(path) -> PromptSpec:
    """A prompt file, or ``all`` (when no file of that name exists): every concept of the model."""
    if is_all(str(path)) and not Path(path).exists():
        return PromptSpec("--prompts all", [ALL])
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PromptFileError(f"{path}: prompt file not found") from None
    except OSError as e:
        raise PromptFileError(f"{path}: cannot read prompt file ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{path}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
    return parse_prompt_text(text, str(path))


def slugify(prompt: str, max_len: int = 60) -> str:
    """File-name-safe form of a prompt: 'Left kidney (upper pole)' -> 'left_kidney_upper_pole'."""
    s = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode("ascii").lower()
    s = re.sub(r"[^a-z0-9]+", "_", s).strip("_")[:max_len].strip("_")
    return s or "prompt"


def unique_slugs(prompts: List[str], taken: Optional[Iterable[str]] = None) -> Dict[str, str]:
    """Prompt -> slug, unique within one case even when prompts slugify alike ('Left kidney', 'left-kidney')."""
    used = set(taken or ())
    out = {}
    for p in prompts:
        base = slugify(p)
        slug, k = base, 2
        while slug in used:
            slug, k = f"{base}_{k}", k + 1
        used.add(slug)
        out[p] = slug
    return out


# ----------------------------------------------------------------------------- instruction files (CoWTalk)
def read_instruction_file(path) -> Dict[str, Union[str, List[str]]]:
    """JSON ``{"cases": {"<case>": "text" | ["chunk 1", "chunk 2"]}, "default": ...}`` or plain text for all."""
    path = Path(path)
    try:
        raw = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise PromptFileError(f"{path}: instruction file not found") from None
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if path.suffix == ".json" or raw.lstrip().startswith("{"):
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise PromptFileError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
        out = dict(obj.get("cases", {}))
        if "default" in obj:
            out["*"] = obj["default"]
    else:
        out = {"*": raw.strip()}
        if not out["*"]:
            raise PromptFileError(f"{path}: empty instruction file")
    for case, v in out.items():
        chunks = [v] if isinstance(v, str) else v
        # an explicit "" in JSON is a round without an instruction: the shape is kept as it is
        if not isinstance(chunks, list) or not chunks or any(not isinstance(c, str) for c in chunks):
            raise PromptFileError(f"{path}: case '{case}': give an instruction text or a list of them")
    return out


def instruction_steps(spec: Dict[str, Union[str, List[str]]], case: str, iterations: int) -> List[str]:
    v = spec.get(case, spec.get("*"))
    if v is None:
        raise PromptFileError(f"no instruction for case '{case}'")
    return [v] * iterations if isinstance(v, str) else list(v)

"""``nnUNetv2_text_merge``: one raw nnU-Net dataset from several partially labelled ones (docs/MERGING.md).

    nnUNetv2_text_merge -d 501 502 [...] -o 600 [-n NAME] [--copy] [--overwrite] [-np N]
                        [--normalization zscore]

- Concepts with the same ``id`` are one concept (terms unioned); a term that would name two concepts stops
  the merge, naming both sources and both concepts.
- Every single-label concept gets one merged label value; label maps are rewritten with them (uint8, or
  uint16 past 255), one case at a time in worker processes. Images are hard-linked (symlinked across file
  systems, copied with ``--copy``), never re-encoded. Case ids get the source's prefix ``dsXXX_``.
- ``sources.json`` records each case's source and the concepts that source annotates
  (:mod:`nnunetv2_text.text.sources`); training and evaluation read it.
- Everything is checked before the first file is written, and the dataset is built in a hidden folder
  that is renamed at the end, so a failed or interrupted merge leaves nothing behind.
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunetv2_text.errors import UserInputError, user_errors_to_exit
from nnunetv2_text.text.dataset_text import find_source_vocabulary
from nnunetv2_text.text.sources import SOURCES_FILE, CaseSources, annotated_concepts
from nnunetv2_text.text.vocabulary import (Concept, Vocabulary, VocabularyError, load_vocabulary, normalize_term,
                                           validate_against_dataset)
from nnunetv2_text.utils.io import atomic_dataset_folder, atomic_write_json
from nnunetv2_text.utils.orientation import DEFAULT_CANONICAL_READER, READER_KEY, canonical_reader

logger = logging.getLogger(__name__)

#: what the merged dataset's channels are normalised with when the sources disagree
NORMALIZATIONS = ("zscore",)


@dataclass
class Source:
    """One input dataset, read and validated."""

    key: str                      # the source's name in sources.json (its dataset id, e.g. "501")
    folder: Path
    dataset_json: dict
    vocabulary: Vocabulary
    prefix: str
    label_map: Dict[int, int] = field(default_factory=dict)   # source label value -> merged value

    @property
    def declared(self) -> set:
        """Label values the source's dataset.json declares (0 included)."""
        return {int(v) for v in self.dataset_json["labels"].values()}


def _read_source(dataset: str, raw_root: Path) -> Source:
    if dataset.isdigit():
        matches = sorted(raw_root.glob(f"Dataset{int(dataset):03d}_*"))
    else:
        matches = [raw_root / dataset] if (raw_root / dataset).is_dir() else []
    matches = [m for m in matches if m.is_dir() and not m.name.startswith(".")]
    if len(matches) != 1:
        raise UserInputError(f"source dataset '{dataset}': {'not found' if not matches else 'ambiguous'} in "
                             f"{raw_root}")
    folder = matches[0]
    ds_file = folder / "dataset.json"
    if not ds_file.is_file():
        raise UserInputError(f"source {folder.name}: {ds_file} is missing")
    dataset_json = json.loads(ds_file.read_text(encoding="utf-8"))
    try:
        vocab = load_vocabulary(find_source_vocabulary(folder, dataset_json), dataset_labels=dataset_json["labels"],
                                dropped_labels=dataset_json.get("dropped_regions", ()))
        validate_against_dataset(vocab, dataset_json["labels"])
    except VocabularyError as e:
        raise UserInputError(f"source {folder.name}: {e}") from None
    key = folder.name[len("Dataset"):len("Dataset") + 3]
    return Source(key, folder, dataset_json, vocab, f"ds{key}")


def _check_compatible(sources: List[Source], normalization: Optional[str]) -> Tuple[dict, str]:
    """The merged channel_names and file ending; sources that cannot be merged are named."""
    first = sources[0]
    ch0 = first.dataset_json["channel_names"]
    for s in sources[1:]:
        ch = s.dataset_json["channel_names"]
        if len(ch) != len(ch0):
            raise UserInputError(f"sources {first.folder.name} and {s.folder.name} have {len(ch0)} and {len(ch)} "
                                 f"input channels; all sources need the same number")
        if ch != ch0 and normalization is None:
            raise UserInputError(f"sources {first.folder.name} ({ch0}) and {s.folder.name} ({ch}) name their channels "
                                 f"differently, so nnU-Net would normalise them differently; pass --normalization "
                                 f"zscore to z-score every image per channel (what VoxTell does for mixed CT/MR)")
        if s.dataset_json["file_ending"] != first.dataset_json["file_ending"]:
            raise UserInputError(f"sources {first.folder.name} and {s.folder.name} store images as "
                                 f"'{first.dataset_json['file_ending']}' and '{s.dataset_json['file_ending']}'; "
                                 f"convert one of them first (images are linked, never re-encoded)")
        rw = "overwrite_image_reader_writer"
        if s.dataset_json.get(rw) != first.dataset_json.get(rw):
            raise UserInputError(f"sources {first.folder.name} and {s.folder.name} use different image readers "
                                 f"({first.dataset_json.get(rw)} vs {s.dataset_json.get(rw)})")
    channels = {k: normalization for k in ch0} if normalization else dict(ch0)
    return channels, first.dataset_json["file_ending"]


def merge_vocabularies(sources: List[Source]) -> Tuple[List[Concept], Dict[str, int]]:
    """The merged concepts (label values already merged) and the merged value of each single-label concept.

    Also fills every source's ``label_map``."""
    terms: Dict[str, Tuple[str, str]] = {}          # normalised term -> (concept id, source folder)
    order: List[str] = []
    main: Dict[str, str] = {}
    synonyms: Dict[str, List[str]] = {}
    for s in sources:
        for c in s.vocabulary.concepts:
            for t in c.terms:
                other = terms.get(normalize_term(t))
                if other is not None and other[0] != c.id:
                    raise UserInputError(f"term '{t}' names concept '{other[0]}' in source {other[1]} and concept "
                                         f"'{c.id}' in source {s.folder.name}; rename one of them")
                terms[normalize_term(t)] = (c.id, s.folder.name)
            if c.id not in main:
                order.append(c.id)
                main[c.id], synonyms[c.id] = c.main, []
            for t in c.terms:
                if normalize_term(t) != normalize_term(main[c.id]) and \
                        normalize_term(t) not in {normalize_term(x) for x in synonyms[c.id]}:
                    synonyms[c.id].append(t)
    # single-label concepts get merged values, in order of first appearance
    value: Dict[str, int] = {}
    for s in sources:
        for c in s.vocabulary.concepts:
            if len(c.labels) == 1 and c.id not in value:
                value[c.id] = len(value) + 1
        for v in sorted(s.declared - {0}):
            singles = [c for c in s.vocabulary.concepts if c.labels == (v,)]
            s.label_map[v] = value[singles[0].id]  # validate_against_dataset guarantees one exists
    labels: Dict[str, set] = {cid: set() for cid in order}
    for s in sources:
        for c in s.vocabulary.concepts:
            mapped = {s.label_map[v] for v in c.labels}
            if labels[c.id] and (len(c.labels) == 1) != (c.id in value):
                raise UserInputError(f"concept '{c.id}' covers one label in one source and several in "
                                     f"{s.folder.name}; give the union concept its own id")
            labels[c.id] |= mapped
    concepts = [Concept(cid, main[cid], tuple(synonyms[cid]), tuple(sorted(labels[cid]))) for cid in order]
    return concepts, value


def _list_cases(folder: Path, split: str, ending: str) -> List[str]:
    images = folder / f"images{split}"
    if not images.is_dir():
        return []
    names = sorted(p.name for p in images.iterdir() if p.name.endswith(f"_0000{ending}"))
    return [n[: -len(f"_0000{ending}")] for n in names]


def _place(src: Path, dst: Path, copy: bool) -> None:
    """Hard link (same file system), else a symbolic link; a copy with ``copy``. Never re-encoded."""
    if copy:
        shutil.copy2(src, dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        os.symlink(os.path.abspath(src), dst)


def _merge_case(job: dict) -> int:
    """Link one case's images and write its label map with merged values; returns the label file's size."""
    src, out, ending = Path(job["folder"]), Path(job["out"]), job["ending"]
    split, case, new = job["split"], job["case"], job["new"]
    for ch in range(job["channels"]):
        f = src / f"images{split}" / f"{case}_{ch:04d}{ending}"
        if not f.is_file():
            raise UserInputError(f"source {src.name}: case '{case}' lacks channel file {f.name}")
        _place(f, out / f"images{split}" / f"{new}_{ch:04d}{ending}", job["copy"])
    lab = src / f"labels{split}" / f"{case}{ending}"
    if not lab.is_file():
        if split == "Tr":
            raise UserInputError(f"source {src.name}: training case '{case}' has no label map {lab}")
        return 0
    img = sitk.ReadImage(str(lab))
    arr = sitk.GetArrayViewFromImage(img)
    lut = np.zeros(max(int(arr.max()), max(map(int, job["map"]))) + 1, np.uint16)
    present = set(np.unique(arr).tolist())
    undeclared = sorted(present - set(job["declared"]))
    if undeclared:
        raise UserInputError(f"source {src.name}: case '{case}' holds label value(s) {undeclared}, which its "
                             f"dataset.json does not declare")
    for v, m in job["map"].items():
        lut[int(v)] = m
    out_arr = lut[arr].astype(np.uint16 if job["uint16"] else np.uint8)
    out_img = sitk.GetImageFromArray(out_arr)
    out_img.CopyInformation(img)
    sitk.WriteImage(out_img, str(out / f"labels{split}" / f"{new}{ending}"), True)
    return 1


def merge_datasets(datasets: Sequence[str], target_id: int, name: str = "Merged", raw_root: Optional[Path] = None,
                   copy: bool = False, overwrite: bool = False, num_processes: int = 1,
                   normalization: Optional[str] = None) -> Path:
    """Build ``$nnUNet_raw/DatasetXXX_<name>`` from the source datasets; returns its folder."""
    raw_root = Path(raw_root or os.environ.get("nnUNet_raw") or "")
    if not str(raw_root) or not raw_root.is_dir():
        raise UserInputError("no raw folder: set nnUNet_raw")
    if not 1 <= target_id <= 999:
        raise UserInputError(f"target dataset id {target_id} is outside 1..999")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]*", name):
        raise UserInputError(f"dataset name '{name}' may only contain letters, digits, '_' and '-'")
    if normalization is not None and normalization not in NORMALIZATIONS:
        raise UserInputError(f"--normalization must be one of {NORMALIZATIONS}, got '{normalization}'")
    if len(datasets) < 2:
        raise UserInputError("give at least two source datasets to merge")
    sources = [_read_source(str(d), raw_root) for d in datasets]
    seen: Dict[Path, str] = {}
    for d, s in zip(datasets, sources):
        if s.folder in seen:
            raise UserInputError(f"source {s.folder.name} is given twice (as '{seen[s.folder]}' and '{d}')")
        seen[s.folder] = str(d)
        if s.folder.name.startswith(f"Dataset{target_id:03d}_"):
            raise UserInputError(f"source {s.folder.name} has the target id {target_id}")
    channels, ending = _check_compatible(sources, normalization)
    concepts, value = merge_vocabularies(sources)
    uint16 = max(value.values()) > 255
    jobs = []
    for s in sources:
        for split in ("Tr", "Ts"):
            for case in _list_cases(s.folder, split, ending):
                jobs.append({"source": s.key, "folder": str(s.folder), "split": split, "case": case,
                             "new": f"{s.prefix}_{case}",
                             "ending": ending, "channels": len(channels), "copy": copy, "uint16": uint16,
                             "map": {str(k): v for k, v in s.label_map.items()}, "declared": sorted(s.declared)})
        if not any(j["folder"] == str(s.folder) and j["split"] == "Tr" for j in jobs):
            raise UserInputError(f"source {s.folder.name}: no training case in imagesTr")

    with atomic_dataset_folder(raw_root, target_id, name, overwrite) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for j in jobs:
            j["out"] = str(tmp)
        bar = dict(total=len(jobs), desc="merging cases", unit="case")
        if num_processes > 1:
            with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
                list(tqdm(pool.imap_unordered(_merge_case, jobs, chunksize=16), **bar))
        else:
            list(tqdm(map(_merge_case, jobs), **bar))
        for sub in ("imagesTs", "labelsTs"):
            if not any((tmp / sub).iterdir()):
                (tmp / sub).rmdir()
        vocabulary = Vocabulary(name, concepts)
        atomic_write_json(tmp / "vocabulary.json", vocabulary.to_dict())
        atomic_write_json(tmp / SOURCES_FILE, CaseSources(
            sources={s.key: {"dataset": s.folder.name, "prefix": s.prefix,
                             "annotated_concepts": annotated_concepts(concepts, s.label_map.values()),
                             "label_map": {str(k): v for k, v in s.label_map.items()}} for s in sources},
            cases={j["new"]: j["source"] for j in jobs}).to_dict())
        dataset_json = {"channel_names": channels, "labels": {"background": 0, **value},
                        "numTraining": sum(j["split"] == "Tr" for j in jobs), "file_ending": ending,
                        "name": name, "description": f"merged by nnUNetv2_text_merge from "
                                                     f"{', '.join(s.folder.name for s in sources)}"}
        # text models read every source in the canonical orientation, however each stores its images
        dataset_json[READER_KEY] = canonical_reader(sources[0].dataset_json) or DEFAULT_CANONICAL_READER
        atomic_write_json(tmp / "dataset.json", dataset_json)
    final = raw_root / f"Dataset{target_id:03d}_{name}"
    logger.info("wrote %s: %d cases from %d sources", final, len(jobs), len(sources))
    return final


@user_errors_to_exit("nnUNetv2_text_merge")
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="nnUNetv2_text_merge", description=__doc__.splitlines()[0])
    p.add_argument("-d", nargs="+", required=True, help="source dataset ids or names (at least two)")
    p.add_argument("-o", type=int, required=True, help="target dataset id")
    p.add_argument("-n", default="Merged", help="target dataset name (default: Merged)")
    p.add_argument("--copy", action="store_true", help="copy images instead of linking them")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset with the target id")
    p.add_argument("-np", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--normalization", choices=NORMALIZATIONS, default=None,
                   help="normalise every channel with this scheme (needed when the sources' channel names differ)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    print(merge_datasets(args.d, args.o, args.n, copy=args.copy, overwrite=args.overwrite,
                         num_processes=max(1, args.np), normalization=args.normalization))
    return 0


if __name__ == "__main__":
    sys.exit(main())

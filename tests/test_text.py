"""Vocabularies, the embedding cache and the bundled text encoder (real MiniLM, offline)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from nnunetv2_text.text.cache import EmbeddingCache, EmbeddingCacheError
from nnunetv2_text.text.dataset_text import load_dataset_text, prepare_dataset_text
from nnunetv2_text.text.encoder import DEFAULT_MODEL_ID, VOXTELL_INSTRUCTION, TextEncoder, default_instruction
from nnunetv2_text.text.vocabulary import (VocabularyError, load_vocabulary, parse_vocabulary,
                                           resolve_vocabulary_path, shipped_vocabularies, validate_against_dataset)
from nnunetv2_text.utils.io import TMP_MARKER

LABELS = {"background": 0, "kidney_left": 1, "kidney_right": 2}


def concept(cid, main, labels, syn=None):
    return {"id": cid, "main": main, "labels": labels,
            "synonyms": syn or [f"{main} {k}" for k in ("a", "b", "c", "d", "e")]}


def vocab(*concepts):
    return {"format": "nnunetv2_text.vocabulary", "version": 1, "name": "t", "concepts": list(concepts)}


KIDNEYS = [concept("kl", "left kidney", ["kidney_left"]), concept("kr", "right kidney", [2]),
           concept("both", "kidneys", [1, 2])]


def test_parse_resolves_names_and_unions():
    v = parse_vocabulary(vocab(*KIDNEYS), "v.json", LABELS)
    validate_against_dataset(v, LABELS)
    assert v.lookup("  Left   KIDNEY ").labels == (1,)
    assert v.lookup("kidneys").labels == (1, 2)
    assert v.lookup("spleen") is None
    assert v.all_terms()[0] == "left kidney" and len(v.all_terms()) == 18


def test_label_without_vocabulary_entry_is_named():
    v = parse_vocabulary(vocab(KIDNEYS[0], KIDNEYS[2]), "v.json", LABELS)
    with pytest.raises(VocabularyError, match=r"v\.json: label 2 \('kidney_right'\) has no vocabulary entry"):
        validate_against_dataset(v, LABELS)


def test_term_mapped_to_two_concepts_is_named():
    dup = concept("kr", "right kidney", [2], ["left kidney", "b", "c", "d", "e"])
    with pytest.raises(VocabularyError, match="term 'left kidney' is mapped to two concepts: 'kl' and 'kr'"):
        parse_vocabulary(vocab(KIDNEYS[0], dup), "v.json", LABELS)


def test_unknown_label_id_is_named():
    v = parse_vocabulary(vocab(*KIDNEYS, concept("x", "spleen", [7])), "v.json", LABELS)
    with pytest.raises(VocabularyError, match="concept 'x' uses label 7"):
        validate_against_dataset(v, LABELS)


def test_too_few_synonyms_and_missing_keys():
    with pytest.raises(VocabularyError, match="at least 5 synonyms"):
        parse_vocabulary(vocab(concept("kl", "left kidney", [1], ["a", "b"])), "v.json", LABELS)
    with pytest.raises(VocabularyError, match="missing key 'labels'"):
        parse_vocabulary(vocab({"id": "a", "main": "a", "synonyms": []}), "v.json", LABELS)


def test_label_names_missing_from_dataset_skip_the_concept():
    v = parse_vocabulary(vocab(*KIDNEYS, concept("sp", "spleen", ["spleen"])), "v.json", LABELS)
    assert [c.id for c in v.concepts] == ["kl", "kr", "both"]


@pytest.mark.parametrize("name", ["toy_shapes", "mni152", "topcow"])
def test_shipped_vocabularies_are_valid(name):
    if name not in shipped_vocabularies():
        pytest.fail(f"vocabulary {name} is not shipped")
    obj = json.loads(resolve_vocabulary_path(name).read_text())
    names = {lab for c in obj["concepts"] for lab in c["labels"] if isinstance(lab, str)}
    labels = {"background": 0, **{n: i + 1 for i, n in enumerate(sorted(names))}}
    v = load_vocabulary(resolve_vocabulary_path(name), labels)
    assert all(len(c.synonyms) >= 5 for c in v.concepts)
    assert len(v.concepts) == len(obj["concepts"])


def test_cache_round_trip_keys_and_errors(tmp_path):
    f = tmp_path / "embeddings.safetensors"
    c = EmbeddingCache(f)
    c.add("m1", "", ["a", "b"], np.eye(2, 4, dtype=np.float32))
    c.add("m1", "instr: ", ["a"], np.ones((1, 4), np.float32))
    c.add("m2", "", ["a"], np.ones((1, 8), np.float32))
    c.save()
    assert not [p for p in os.listdir(tmp_path) if TMP_MARKER in p]
    r = EmbeddingCache(f)
    np.testing.assert_array_equal(r.get("m1", "", ["b", "a"]), np.eye(2, 4)[[1, 0]])
    np.testing.assert_array_equal(r.get("m1", "instr: ", ["a"]), np.ones((1, 4)))  # keyed by instruction too
    assert r.missing("m1", "", ["a", "c", "c"]) == ["c"]
    with pytest.raises(EmbeddingCacheError, match="term 'c' is not in the cache"):
        r.get("m1", "", ["a", "c"])
    with pytest.raises(EmbeddingCacheError, match="no embeddings for encoder 'other'"):
        r.get("other", "", ["a"])
    with pytest.raises(EmbeddingCacheError, match="dimension 8, the model expects 4"):
        r.get("m2", "", ["a"], expected_dim=4)
    with pytest.raises(EmbeddingCacheError, match="dimension 4, new vectors have 3"):
        r.add("m1", "", ["z"], np.ones((1, 3), np.float32))
    # not pickle: the file is plain safetensors with JSON metadata
    from safetensors import safe_open
    with safe_open(str(f), "numpy") as h:
        assert json.loads(h.metadata()["nnunetv2_text"])["format"] == "nnunetv2_text.embedding_cache"


def test_corrupt_cache_names_the_file(tmp_path):
    f = tmp_path / "embeddings.safetensors"
    f.write_bytes(b"garbage")
    with pytest.raises(EmbeddingCacheError, match="embeddings.safetensors"):
        EmbeddingCache(f)


@pytest.fixture(scope="module")
def minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return TextEncoder("default")


def test_bundled_encoder_is_offline_and_normalised(minilm):
    assert minilm.model_id == DEFAULT_MODEL_ID and minilm.instruction == ""
    e = minilm.encode(["left kidney", "right kidney", "liver"])
    assert e.shape == (3, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]  # related terms are closer
    with pytest.raises(ValueError, match="more than the encoder's limit"):
        minilm.check_length(["word " * 400])


def test_instruction_models_get_the_voxtell_instruction():
    assert default_instruction("Qwen/Qwen3-Embedding-4B") == VOXTELL_INSTRUCTION
    assert default_instruction("sentence-transformers/all-MiniLM-L6-v2") == ""


def test_prepare_and_load_dataset_text(tmp_path, minilm):
    raw, pre = tmp_path / "raw" / "Dataset001_K", tmp_path / "pre" / "Dataset001_K"
    raw.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"labels": LABELS, "channel_names": {"0": "CT"},
                                                  "file_ending": ".nii.gz", "numTraining": 1,
                                                  "overwrite_image_reader_writer": "SimpleITKIOWithReorient"}))
    (raw / "vocabulary.json").write_text(json.dumps(vocab(*KIDNEYS)))
    s = prepare_dataset_text(raw, pre, minilm)
    foreign = json.loads((pre / "text" / "foreign_prompts.json").read_text())["prompts"]
    assert len(foreign) > 300 and "liver" in foreign and "hello world" in foreign
    assert s["foreign"] == len(foreign) and s["foreign_left_out"] >= 0
    assert s["added"] == 18 + len(foreign) + s["foreign_left_out"] and s["dim"] == 384
    assert prepare_dataset_text(raw, pre, minilm)["added"] == 0  # nothing re-encoded
    dt = load_dataset_text(pre, json.loads((raw / "dataset.json").read_text()))
    assert dt.embeddings.shape == (18 + len(foreign), 384) and dt.model_id == DEFAULT_MODEL_ID
    assert dt.foreign == foreign and dt.prompt_embeddings().shape == (18, 384)
    np.testing.assert_allclose(dt.embeddings[dt.term_index()["kidneys"]], minilm.encode(["kidneys"])[0], atol=1e-5)
    # a cache built with another encoder is refused with the file named
    (pre / "text" / "encoder.json").write_text(json.dumps({"model_id": "other/model", "instruction": "", "dim": 384}))
    with pytest.raises(EmbeddingCacheError, match="no embeddings for encoder 'other/model'"):
        load_dataset_text(pre, {"labels": LABELS})
    # ... and so is one of another dimension
    (pre / "text" / "encoder.json").write_text(json.dumps({"model_id": DEFAULT_MODEL_ID, "instruction": "",
                                                           "dim": 1024}))
    with pytest.raises(EmbeddingCacheError, match="dimension 384, the model expects 1024"):
        load_dataset_text(pre, {"labels": LABELS})


@pytest.mark.parametrize("name", ["toy_shapes", "mni152", "topcow"])
def test_foreign_pool_never_holds_a_term_of_the_dataset(name):
    """A pool term that the vocabulary resolves, or that shares a whole-word span with one of its terms,
    could name something the images show: it must never be taught as "not here"."""
    from nnunetv2_text.text.foreign import foreign_prompt_pool
    from nnunetv2_text.text.vocabulary import normalize_term

    vocab = load_vocabulary(resolve_vocabulary_path(name))
    pool = foreign_prompt_pool(vocab)
    assert len(pool) > 50
    own = {normalize_term(t) for t in vocab.all_terms()}
    for t in pool:
        assert vocab.lookup(t) is None and normalize_term(t) not in own, t
        assert not any(f" {o} " in f" {normalize_term(t)} " or f" {normalize_term(t)} " in f" {o} " for o in own), t


def test_foreign_pool_excludes_word_overlaps_and_is_disjoint_from_held_out_lists():
    from pathlib import Path

    from nnunetv2_text.text.foreign import foreign_prompt_pool, generic_foreign_prompts, shipped_vocabulary_terms
    from nnunetv2_text.text.vocabulary import normalize_term

    toy = load_vocabulary(resolve_vocabulary_path("toy_shapes"))
    pool = foreign_prompt_pool(toy)
    assert "food pipe" not in pool and "liver" in pool  # toy has "pipe"
    mni = foreign_prompt_pool(load_vocabulary(resolve_vocabulary_path("mni152")))
    assert "left kidney" in mni and not [t for t in mni if "brain" in t.split()]  # mni has "left brain"
    held_out = json.loads((Path(__file__).parents[1] / "benchmarks" / "robustness_prompts.json").read_text())
    everything = {normalize_term(t) for t in generic_foreign_prompts() + shipped_vocabulary_terms()}
    for t in held_out["foreign"] + [p for d in held_out["paraphrases"].values() for ps in d.values() for p in ps]:
        assert normalize_term(t) not in everything, t


def test_pool_terms_close_to_the_vocabulary_are_left_out(minilm):
    """Measured with the bundled MiniLM: "windpipe" is the toy's "pipe" to the network (0.60 after centring),
    "banana" is not; the first must not be taught as absent."""
    from nnunetv2_text.text.foreign import MAX_POOL_SIMILARITY, drop_close_to_vocabulary

    toy = load_vocabulary(resolve_vocabulary_path("toy_shapes"))
    own = toy.all_terms()
    pool = ["windpipe", "basketball", "banana", "hello world", "red car"]
    kept = drop_close_to_vocabulary(pool, minilm.encode(pool), minilm.encode(own))
    assert "windpipe" not in kept and "basketball" not in kept and {"hello world", "red car"} <= set(kept)
    assert drop_close_to_vocabulary(pool, minilm.encode(pool), minilm.encode(own), 1.01) == pool
    assert 0 < MAX_POOL_SIMILARITY < 1


def test_mentions_finds_whole_terms_longest_first():
    vocab = parse_vocabulary({"concepts": [
        {"id": "L-PCA", "main": "left posterior cerebral artery", "labels": [3],
         "synonyms": ["L-PCA", "left PCA", "lt PCA", "PCA left", "left P1"]},
        {"id": "R-PCA", "main": "right posterior cerebral artery", "labels": [2],
         "synonyms": ["R-PCA", "right PCA", "rt PCA", "PCA right", "right P1"]},
        {"id": "BA", "main": "basilar artery", "labels": [1],
         "synonyms": ["BA", "basilar", "basilar trunk", "the basilar", "basilar a."]}]})
    assert [c.id for c in vocab.mentions("Thin the left PCA, then the BASILAR artery.")] == ["L-PCA", "BA"]
    assert [c.id for c in vocab.mentions("r-pca is too thick; so is the R PCA")] == ["R-PCA"]
    # whole words only: 'bath' is not 'ba', 'rectangle' holds no term
    assert vocab.mentions("Run a bath and draw a rectangle.") == []
    assert vocab.mentions("") == []


@pytest.mark.parametrize("text, side", [
    ("left kidney", "left"), ("L-PCA", "left"), ("Lt kidney", "left"), ("glandula suprarenalis sinistra", "left"),
    ("grey matter, right", "right"), ("the right side's grey matter", "right"), ("ren dexter", "right"),
    ("left and right kidneys", "both"), ("bilateral GM", "both"), ("both left lung lobes", "left"),
    ("liver", None), ("lateral ventricle", None), ("the brightest lesion", None), ("leftover", None),
    ("L 1 vertebra", None), ("L-1", None), ("r/o mass", None), ("l'artère cérébrale postérieure droite", "right"),
    ("rechte Niere", "right"), ("riñón izquierdo", "left")])
def test_prompt_side_reads_whole_side_words(text, side):
    from nnunetv2_text.text.sides import prompt_side

    assert prompt_side(text) == side


def test_shipped_vocabularies_name_their_sides():
    from nnunetv2_text.text.sides import vocabulary_sides

    mni = load_vocabulary(resolve_vocabulary_path("mni152"))
    assert vocabulary_sides(mni) == {
        "left_grey_matter": "left", "right_grey_matter": "right", "left_white_matter": "left",
        "right_white_matter": "right", "grey_matter": "both", "white_matter": "both",
        "left_hemisphere": "left", "right_hemisphere": "right"}
    assert set(vocabulary_sides(load_vocabulary(resolve_vocabulary_path("toy_shapes"))).values()) == {None}
    cow = vocabulary_sides(load_vocabulary(resolve_vocabulary_path("topcow")))
    assert cow["anterior_circulation"] == cow["posterior_circulation"] == "both"  # by their labels
    assert list(cow.values()).count("left") == 5 and list(cow.values()).count(None) == 3


def test_side_words_overrule_the_encoder(minilm):
    """Wordings the bundled MiniLM puts nearest a term of the wrong side (or of no side) are understood as
    the side they name; a side-less wording nearest a one-sided term goes to the concept of both sides."""
    from nnunetv2_text.text.sides import side_consistent_term

    mni = load_vocabulary(resolve_vocabulary_path("mni152"))
    terms = mni.all_terms()
    t = minilm.encode(terms)
    center = t.mean(0)

    def understood(prompt, rule=True):
        x = minilm.encode([prompt])[0] - center
        sims = (t - center) @ x / np.linalg.norm(t - center, axis=1) / np.linalg.norm(x)
        j = side_consistent_term(prompt, sims.tolist(), terms, mni) if rule else int(np.argmax(sims))
        return mni.lookup(terms[j]).id

    cases = {"the right side's grey matter": "right_grey_matter", "grey matter, right": "right_grey_matter",
             "white matter, right": "right_white_matter", "cerebral gray matter": "grey_matter"}
    assert {p: understood(p) for p in cases} == cases
    # the encoder alone gets them wrong: what the rule is for
    assert all(understood(p, rule=False) != c for p, c in cases.items())
    # vocabulary terms are their own concepts, and agreeing wordings are left alone
    assert understood("left brain") == "left_hemisphere" and understood("bilateral white matter") == "white_matter"
    assert understood("right hemispheric white matter") == "right_white_matter"


def test_side_rule_falls_back_without_compatible_terms():
    from nnunetv2_text.text.sides import side_consistent_term

    toy = parse_vocabulary(vocab(concept("a", "liver", [1]), concept("b", "spleen", [2])),
                           dataset_labels={"liver": 1, "spleen": 2})
    terms = toy.all_terms()
    sims = [0.1] * len(terms)
    sims[terms.index("spleen b")] = 0.9
    # "left" names a side; no concept has one, so the nearest term overall
    assert toy.lookup(terms[side_consistent_term("left spleen", sims, terms, toy)]).id == "b"
    kid = parse_vocabulary(vocab(*KIDNEYS), dataset_labels=LABELS)
    terms = kid.all_terms()
    sims = [0.0] * len(terms)
    sims[terms.index("left kidney")], sims[terms.index("right kidney a")] = 0.9, 0.5
    assert kid.lookup(terms[side_consistent_term("the kidney on the right", sims, terms, kid)]).id == "kr"
    assert kid.lookup(terms[side_consistent_term("renal organ", sims, terms, kid)]).id == "both"
    # "kidneys" names no side but holds both kidneys' labels: a left prompt is never understood as it
    from nnunetv2_text.text.sides import vocabulary_sides
    assert vocabulary_sides(kid) == {"kl": "left", "kr": "right", "both": "both"}
    sims[terms.index("kidneys a")] = 0.95
    assert kid.lookup(terms[side_consistent_term("kidney, lt", sims, terms, kid)]).id == "kl"

    # a side-less or "both" prompt goes to a bilateral concept only when that is exactly the nearest concept
    # and its twin: the middle lobe exists on the right only, "lungs" is more than its twin
    lobes = parse_vocabulary(vocab(concept("rul", "right upper lobe", [1]), concept("rml", "right middle lobe", [2]),
                                   concept("lul", "left upper lobe", [3]), concept("lungs", "lungs", [1, 2, 3])),
                             dataset_labels={"a": 1, "b": 2, "c": 3})
    assert vocabulary_sides(lobes)["lungs"] == "both"
    terms = lobes.all_terms()
    sims = [0.0] * len(terms)
    sims[terms.index("right middle lobe a")], sims[terms.index("lungs b")] = 0.9, 0.5
    for prompt in ("the middle lobe", "both middle lobes"):
        assert lobes.lookup(terms[side_consistent_term(prompt, sims, terms, lobes)]).id == "rml"
    sims[terms.index("right middle lobe a")], sims[terms.index("right upper lobe b")] = 0.0, 0.9
    # the upper lobes' union is not in this vocabulary: the nearest one stays
    assert lobes.lookup(terms[side_consistent_term("upper lobe", sims, terms, lobes)]).id == "rul"

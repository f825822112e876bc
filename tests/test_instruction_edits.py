"""The edit an instruction asks for, read from its verb: every sentence the CoWTalk conversion writes, and the
inverse edits a user may ask for."""
import numpy as np
import pytest

from dataset_conversion.cowtalk.instructions import (_INVERSE_LONG, _INVERSE_OF, _INVERSE_SHORT, _LONG, _SHORT,
                                                     INVERTIBLE_ERROR_TYPES, describe_error, describe_inverse,
                                                     make_record)
from nnunetv2_text.errors import UserInputError
from nnunetv2_text.text.instructions import (EDITS, INVERSE_EDIT, all_instruction_texts, inverted, read_edits,
                                             validate_record)

#: the edit that repairs each error type of the conversion
REPAIR = {"none": "none", "global_thickening": "thin", "global_thinning": "thicken", "missing": "add",
          "local_thickening": "thin", "local_thinning": "thicken", "shortening": "extend",
          "disconnection": "reconnect", "fragmentation": "reconnect"}
FIELDS = dict(short="left MCA", full="left middle cerebral artery", n=2, vox="voxels", end="origin",
              far_end="distal end", loc="middle third", lo=30, hi=60, ratio=1.5, pct_kept=50, k=3,
              gaps="30% and 60%", g=2, far="distal", rest=40)


@pytest.mark.parametrize("error_type", sorted(REPAIR))
def test_every_template_reads_as_its_repair(error_type):
    assert set(_SHORT) == set(_LONG) == set(REPAIR)
    for template in _SHORT[error_type] + _LONG[error_type]:
        text = template.format(**FIELDS)
        assert read_edits(text) == [REPAIR[error_type]], text


def test_the_conversions_own_instructions_read_as_their_repair():
    """describe_error writes the sentences the datasets hold (templates drawn at random, real parameters)."""
    rng = np.random.default_rng(0)
    params = {"radius": 2.0, "local_radius": 3.0, "range_pct": [30.0, 60.0], "gaps_pct": [[30.0, 35.0], [60.0, 65.0]]}
    for error_type, edit in REPAIR.items():
        if error_type == "none":
            continue
        for _ in range(6):
            described = describe_error({"type": error_type, "label": 7, "params": params}, rng)
            for kind in ("instruction_short", "instruction_long"):
                assert read_edits(described[kind]) == [edit], described[kind]


def test_every_inverse_template_reads_as_the_inverse_of_the_repair():
    """The conversion's inverse sentences ask for the error itself: the repair's inverse edit, for every error
    type whose repair has an inverse, and only those."""
    assert set(INVERTIBLE_ERROR_TYPES) == {t for t, e in REPAIR.items() if e in INVERSE_EDIT}
    for t in INVERTIBLE_ERROR_TYPES:
        templates = (_SHORT[_INVERSE_OF[t]] + _LONG[_INVERSE_OF[t]]) if t in _INVERSE_OF else \
            (_INVERSE_SHORT[t] + _INVERSE_LONG[t])
        for template in templates:
            assert read_edits(template.format(**FIELDS)) == [INVERSE_EDIT[REPAIR[t]]], template


def test_the_conversions_records_read_in_both_directions():
    """make_record writes what the datasets hold: each error's repair reads as its repair, its inverse (where
    written) as the inverse edit; the repair sentences are those written before inverses existed."""
    params = {"radius": 2.0, "local_radius": 3.0, "range_pct": [30.0, 60.0], "gaps_pct": [[30.0, 35.0], [60.0, 65.0]]}
    for seed in range(4):
        errors = [{"type": t, "label": 7, "params": params} for t in REPAIR if t != "none"]
        record = make_record("c", "s", "ct", 0, seed, errors, np.random.default_rng([seed, 1]))
        validate_record(record, "record", labels=(7,))
        before = np.random.default_rng([seed, 1])
        for e in record["errors"]:
            assert e["instruction_short"] == describe_error(e, before)["instruction_short"]
            assert read_edits(e["instruction_short"]) == read_edits(e["instruction_long"]) == [REPAIR[e["type"]]]
            if e["type"] in INVERTIBLE_ERROR_TYPES:
                inverse = [INVERSE_EDIT[REPAIR[e["type"]]]]
                assert read_edits(e["inverse_short"]) == read_edits(e["inverse_long"]) == inverse, e
            else:
                assert "inverse_short" not in e and describe_inverse(e, np.random.default_rng(0)) == {}


def test_direction_channels_read_every_conversion_sentence_in_both_directions():
    """What the refiner's direction channels hold (issue #26), for every vessel and every sentence the conversion
    writes: the named vessel alone, growing where its edit grows it and shrinking where it shrinks it, and the
    other way round for the inverse sentence."""
    from dataset_conversion.cowtalk.convert import contiguous_vocabulary
    from dataset_conversion.cowtalk.instructions import TOPCOW_LABELS
    from nnunetv2_text.text.instructions import GROWING_EDITS, direction_vector, edit_directions
    from nnunetv2_text.text.vocabulary import parse_vocabulary

    vocab = parse_vocabulary(contiguous_vocabulary())
    params = {"radius": 2.0, "local_radius": 3.0, "range_pct": [30.0, 60.0], "gaps_pct": [[30.0, 35.0], [60.0, 65.0]]}
    originals = sorted(v for v in TOPCOW_LABELS if v)  # the conversion writes TopCoW's ids (15: 3rd-A2)
    k = len(originals) + 1
    for cid, label in enumerate(originals, start=1):
        errors = [{"type": t, "label": label, "params": params} for t in REPAIR if t != "none"]
        record = make_record("c", "s", "ct", 0, label, errors, np.random.default_rng(label))
        for e in record["errors"]:
            pairs = [(e[f"instruction_{n}"], REPAIR[e["type"]]) for n in ("short", "long")]
            if "inverse_short" in e:
                pairs += [(e[f"inverse_{n}"], INVERSE_EDIT[REPAIR[e["type"]]]) for n in ("short", "long")]
            for text, edit in pairs:
                way = "grow" if edit in GROWING_EDITS else "shrink"
                assert edit_directions(text, vocab) == {cid: {way}}, text
                v = direction_vector(edit_directions(text, vocab), k)
                assert v.sum() == 1 and v[2 * (cid - 1) + (way == "shrink")] == 1, text


def test_training_texts_cover_both_directions_and_bad_inverses_are_refused():
    thin = {"type": "global_thinning", "label": 3, "short": "Thicken the BA.", "long": "Thicken the BA a lot.",
            "inverse": {"short": "Thin the BA.", "long": "Thin the BA a lot."}}
    gap = {"type": "disconnection", "label": 4, "short": "Reconnect the ICA.", "long": "Close the gap in the ICA."}
    texts = set(all_instruction_texts({"case": [thin, gap]}))
    assert {"Thin the BA. Reconnect the ICA.", "Thicken the BA. Reconnect the ICA.", "Thin the BA.",
            "Reconnect the ICA.", "Thin the BA a lot. Close the gap in the ICA."} <= texts
    assert inverted(thin)["short"] == "Thin the BA." and not any(t.startswith("Disconnect") for t in texts)
    record = make_record("c", "s", "ct", 0, 0, [{"type": "missing", "label": 7, "params": {}}],
                         np.random.default_rng(0))
    record["errors"][0]["inverse_short"] = ""
    with pytest.raises(UserInputError, match=r"errors\[0\] has 'inverse_short'"):
        validate_record(record, "instructionsTr/c.json")


@pytest.mark.parametrize("text, edit", [
    ("Shorten the left MCA.", "shorten"), ("Trim the basilar artery back.", "shorten"),
    ("Reduce the length of the right PCA.", "shorten"), ("Thin the left ICA.", "thin"),
    ("Make the Acom narrower.", "thin"), ("Increase the radius of the right ACA.", "thicken"),
    ("Remove the fragment next to the basilar artery.", "remove_fragment"),
    ("Delete the stray island near the left PCA.", "remove_fragment"), ("Remove the right Pcom.", "remove"),
    ("Please extend the left MCA.", "extend"), ("Bridge the gap in the BA.", "reconnect"),
])
def test_inverse_edits_and_synonyms(text, edit):
    assert read_edits(text) == [edit]


def test_descriptions_alone_ask_for_nothing_and_joined_instructions_ask_for_each():
    assert read_edits("The left MCA is too thin.") == []
    assert read_edits("the left MCA") == [] and read_edits("Make it look better.") == []
    assert read_edits("Thin the BA. Extend the left MCA.") == ["thin", "extend"]
    assert read_edits("") == ["none"] and read_edits("No correction is needed.") == ["none"]
    assert all(INVERSE_EDIT[INVERSE_EDIT[e]] == e for e in INVERSE_EDIT) and set(INVERSE_EDIT) <= set(EDITS)

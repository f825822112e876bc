"""The edit an instruction asks for, read from its verb: every sentence the CoWTalk conversion writes, and the
inverse edits a user may ask for."""
import numpy as np
import pytest

from dataset_conversion.cowtalk.instructions import _LONG, _SHORT, describe_error
from nnunetv2_text.text.instructions import EDITS, INVERSE_EDIT, read_edits

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

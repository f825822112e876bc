"""Per-mask metrics on hand-made volumes with known answers."""
import math

import numpy as np
import pytest

from nnunetv2_text.evaluation.metrics import (betti0_error, cldice, dice, laterality_pairs, mask_metrics,
                                              n_components, robust_skeleton, surface_metrics,
                                              volume_ml, wrong_side_fraction)
from nnunetv2_text.evaluation.robustness import robustness_stats, summarize_values


def cube(shape=(12, 12, 12), lo=(3, 3, 3), size=4):
    m = np.zeros(shape, bool)
    m[lo[0]:lo[0] + size, lo[1]:lo[1] + size, lo[2]:lo[2] + size] = True
    return m


def tube(shape=(9, 9, 40), length=(2, 38)):
    m = np.zeros(shape, bool)
    m[3:6, 3:6, length[0]:length[1]] = True
    return m


def test_dice_known_values_and_empty_convention():
    a = cube()
    b = np.zeros_like(a)
    b[3:7, 3:7, 3:5] = True  # half of the cube
    assert dice(a, b) == pytest.approx(2 * 32 / (64 + 32))
    assert dice(a, a) == 1.0
    assert dice(b & False, a & False) == 1.0  # both empty: correct negative answer
    assert dice(a, np.zeros_like(a)) == 0.0
    assert dice(np.zeros_like(a), a) == 0.0


@pytest.mark.parametrize("axis,spacing,expected", [(0, (2.0, 1.0, 1.0), 2.0), (2, (2.0, 1.0, 1.0), 1.0),
                                                   (2, (1.0, 1.0, 3.0), 3.0)])
def test_hd95_follows_spacing_of_the_shifted_axis(axis, spacing, expected):
    ref = cube()
    pred = np.roll(ref, 1, axis=axis)
    nsd, hd95 = surface_metrics(pred, ref, spacing, tolerance_mm=0.5)
    assert hd95 == pytest.approx(expected)
    assert nsd < 1.0


def test_nsd_below_and_above_the_shift():
    ref = cube()
    pred = np.roll(ref, 1, axis=0)
    spacing = (2.0, 1.0, 1.0)
    below, _ = surface_metrics(pred, ref, spacing, tolerance_mm=1.0)
    above, _ = surface_metrics(pred, ref, spacing, tolerance_mm=2.0)
    assert 0.0 < below < 0.95
    assert above == pytest.approx(1.0)
    assert surface_metrics(ref, ref, spacing, 0.0) == (pytest.approx(1.0), pytest.approx(0.0))


def test_surface_metrics_empty_conventions():
    ref, empty = cube(), np.zeros((12, 12, 12), bool)
    assert surface_metrics(empty, ref, (1, 1, 1)) == (0.0, math.inf)
    assert surface_metrics(ref, empty, (1, 1, 1)) == (0.0, math.inf)
    assert surface_metrics(empty, empty, (1, 1, 1)) == (1.0, math.inf)


def test_cldice_identical_tubes_and_gap():
    t = tube()
    assert cldice(t, t) == pytest.approx(1.0)
    shorter = tube(length=(2, 20))
    # predicted half tube: all its skeleton lies in the reference (Tprec 1), half of the reference's lies in
    # the prediction (Tsens 18/36): clDice = 2 * 1 * 0.5 / (1 + 0.5)
    assert cldice(shorter, t) == pytest.approx(2 / 3)
    assert cldice(np.zeros_like(t), t) == 0.0
    assert cldice(np.zeros_like(t), np.zeros_like(t)) == 1.0


def test_robust_skeleton_keeps_every_component():
    m = cube(size=4) | cube(lo=(9, 9, 9), size=2)  # scikit-image erases even-sized cubes
    skel = robust_skeleton(m)
    assert n_components(skel) == 2
    assert (skel & ~m).sum() == 0


def test_betti0_error_of_split_tube():
    t = tube()
    split = t.copy()
    split[:, :, 20] = False
    assert n_components(split) == 2
    assert betti0_error(split, t) == 1
    assert betti0_error(t, t) == 0
    diagonal = np.zeros((4, 4, 4), bool)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = True  # corner neighbours: one component with 26-connectivity
    assert n_components(diagonal) == 1


def test_mask_metrics_volume_and_tubular_switch():
    ref = cube()
    m = mask_metrics(ref, ref, (2.0, 1.0, 0.5), tubular=False)
    assert math.isnan(m["cldice"])
    assert m["ref_volume_ml"] == pytest.approx(64 * 1.0 / 1000)
    assert volume_ml(ref, (2.0, 2.0, 2.0)) == pytest.approx(0.512)
    assert mask_metrics(ref, ref, (1, 1, 1), tubular=True)["cldice"] == pytest.approx(1.0)


def test_laterality():
    left, right = cube(lo=(3, 3, 1)), cube(lo=(3, 3, 7))
    assert wrong_side_fraction(right, right) == 1.0
    assert wrong_side_fraction(left, right) == 0.0
    assert math.isnan(wrong_side_fraction(np.zeros_like(left), right))
    from nnunetv2_text.text.sides import prompt_side

    assert prompt_side("Left kidney") == "left" and prompt_side("left and right") == "both"
    pairs = laterality_pairs({"lk": "left kidney", "rk": "Right  kidney", "liver": "liver", "la": "left arm"})
    assert pairs == {"lk": "rk", "rk": "lk"}


def test_robustness_stats_known_spread():
    rows = [{"case": "a", "concept": "c", "prompt": p, "is_negative": False, "dice": d}
            for p, d in (("w1", 1.0), ("w2", 2 / 3), ("w3", 0.0))]
    rows.append({"case": "a", "concept": "c", "prompt": "w4", "is_negative": True, "dice": 1.0})  # ignored
    rows.append({"case": "b", "concept": "single", "prompt": "x", "is_negative": False, "dice": 0.3})  # one wording
    (stats,) = robustness_stats(rows)
    assert stats["concept"] == "c" and stats["n_wordings"] == 3
    assert stats["mean_dice"] == pytest.approx(5 / 9)
    assert stats["std_dice"] == pytest.approx(math.sqrt(14) / 9)
    assert stats["worst_dice"] == 0.0
    assert stats["gap"] == pytest.approx(5 / 9)


def test_summarize_values_counts_infinite():
    s = summarize_values([1.0, 3.0, math.inf, math.nan])
    assert s == {"mean": 2.0, "std": 1.0, "n": 2, "n_infinite": 1}


def test_false_positive_islands_counts_components_away_from_the_reference():
    from nnunetv2_text.evaluation.metrics import false_positive_islands

    ref = np.zeros((12, 12, 12), bool)
    ref[2:5, 2:5, 2:5] = True
    pred = np.zeros_like(ref)
    assert false_positive_islands(pred, ref) == 0
    pred[4:7, 4:7, 4:7] = True      # overlaps the reference: not an island
    pred[9:11, 9:11, 9:11] = True   # stray blob
    pred[0, 11, 0] = True           # single stray voxel
    assert false_positive_islands(pred, ref) == 2
    assert false_positive_islands(pred, np.zeros_like(ref)) == 3

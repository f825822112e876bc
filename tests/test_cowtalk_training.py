"""CoWTalk refinement: converted phantom -> real nnU-Net planning -> CoWTalkRefineTrainer -> refinement."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import COWTALK_ID, COWTALK_PLANS, cli, predict_args, run_cli
from nnunetv2_text.training.channel_transforms import OnlyChannels
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform

TRAINER = "CoWTalkRefineTrainer_testSmoke"


def test_intensity_augmentation_touches_only_the_image_channel():
    image = torch.zeros(4, 8, 8, 8)
    image[1:, 2:5] = 1  # binary shape channels
    t = OnlyChannels(GaussianNoiseTransform(noise_variance=(0.5, 0.5), p_per_channel=1), [0])
    out = t(image=image.clone())["image"]
    assert out[0].abs().sum() > 0
    torch.testing.assert_close(out[1:], image[1:])


def test_a_round_edits_only_the_named_vessels_and_keeps_their_topology():
    from nnunetv2_text.inference.refine import scoped_changes

    old = np.zeros((9, 9, 20), np.uint8)
    old[4, 4, 2:18] = 1          # vessel 1, one piece
    old[6, 6, 2:18] = 2          # vessel 2, not named
    proposed = old.copy()
    proposed[4, 5, 2:18] = 1     # thicken 1: kept
    proposed[6, 6, 2:5] = 0      # thin 2: not named, dropped
    proposed[0, 0, 0:3] = 1      # an island of 1: dropped
    accept = scoped_changes(old, proposed, [1])
    assert accept[4, 5, 2:18].all() and not accept[6, 6].any() and not accept[0, 0].any()
    # removing 1's middle would cut it in two: every removal of 1 in that round is dropped
    cut = old.copy()
    cut[4, 4, 9:11] = 0
    cut[4, 4, 16:18] = 0
    assert not scoped_changes(old, cut, [1]).any()
    assert scoped_changes(old, cut, [1, 2]).sum() == 0
    # shortening the end alone keeps one piece: allowed
    short = old.copy()
    short[4, 4, 16:18] = 0
    assert scoped_changes(old, short, [1]).sum() == 2
    # joining two pieces (fragmentation) is allowed; a vessel the shape lacks may grow from the shape
    broken = old.copy()
    broken[4, 4, 9:11] = 0
    assert scoped_changes(broken, old, [1])[4, 4, 9:11].all()
    missing = old.copy()
    missing[5, 5, 2:10] = 3      # touches vessel 1 (26-neighbourhood): kept
    missing[0, 8, 15:19] = 3     # floats: dropped
    accept = scoped_changes(old, missing, [3])
    assert accept[5, 5, 2:10].all() and not accept[0, 8].any()
    # what the instruction does not name never changes, whatever the network proposes
    assert not scoped_changes(old, missing, [1]).any()


def test_a_named_vessel_changes_only_the_way_its_verb_says():
    """Under scope 'named', "thicken" may only grow its vessel and "thin" only shrink it, sentence by sentence."""
    from types import SimpleNamespace

    from dataset_conversion.cowtalk.convert import contiguous_vocabulary
    from nnunetv2_text.inference.refine import Refiner, scoped_changes
    from nnunetv2_text.text.vocabulary import parse_vocabulary

    old = np.zeros((9, 9, 20), np.uint8)
    old[4, 4, 2:18] = 1
    old[2, 2, 2:18] = 2
    proposed = old.copy()
    proposed[4, 5, 2:18] = 1      # 1 grows
    proposed[4, 4, 15:18] = 0     # and shortens at its end
    proposed[2, 2, 14:18] = 0     # 2 shortens
    assert scoped_changes(old, proposed, [1, 2]).sum() == 16 + 3 + 4
    grow_only = scoped_changes(old, proposed, [1, 2], {1: {"grow"}, 2: {"shrink"}})
    assert grow_only[4, 5, 2:18].all() and not grow_only[4, 4].any() and grow_only[2, 2, 14:18].all()
    assert scoped_changes(old, proposed, [1, 2], {1: {"shrink"}})[4, 4, 15:18].all()
    assert not scoped_changes(old, proposed, [1, 2], {1: {"shrink"}})[4, 5].any()
    vocab = parse_vocabulary(contiguous_vocabulary())
    refiner = SimpleNamespace(p=SimpleNamespace(vocabulary=vocab))
    ways = Refiner.directions(refiner, "The left MCA is too thin; thicken it. Shorten the basilar artery.")
    lmca, ba = vocab.lookup("left MCA").labels[0], vocab.lookup("basilar artery").labels[0]
    assert ways == {lmca: {"grow"}, ba: {"shrink"}}
    assert Refiner.directions(refiner, "The left MCA looks odd.") == {}


@pytest.fixture(scope="module")
def cowtalk_model(cowtalk_dataset, nnunet_env):
    run_cli([cli("nnUNetv2_train"), str(COWTALK_ID), "3d_fullres", "0", "-tr", TRAINER, "-p", COWTALK_PLANS,
             "-device", "cpu"], nnunet_env)
    folder = Path(nnunet_env["nnUNet_results"]) / cowtalk_dataset["raw"].name / f"{TRAINER}__{COWTALK_PLANS}__3d_fullres"
    return {**cowtalk_dataset, "folder": folder}


def test_refinement_trainer_trains_and_records_instructions(cowtalk_model):
    instr = json.loads((cowtalk_model["pre"] / "text" / "instructions.json").read_text())
    assert len(instr) == 6 and all(isinstance(v, list) for v in instr.values())
    ckpt = torch.load(cowtalk_model["folder"] / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                      weights_only=False)
    assert ckpt["text"]["network_config"]["outputs_per_prompt"] == 14  # background + 13 vessel classes
    # the instruction's directions enter as 2 x 13 channels after the dataset's (image + 13 shapes)
    assert ckpt["text"]["network_config"]["direction_channels"] is True
    first = next(k for k in ckpt["network_weights"] if k.startswith("encoder.") and k.endswith("weight"))
    assert ckpt["network_weights"][first].shape[1] == 1 + 13 + 26, first
    summary = json.loads((cowtalk_model["folder"] / "fold_0" / "validation" / "summary.json").read_text())
    assert summary["per_case"]


def test_iterative_refinement_keeps_every_step(cowtalk_model, nnunet_env, tmp_path):
    raw = cowtalk_model["raw"]
    case = sorted(p.name[:-12] for p in (raw / "imagesTr").glob("*_0000.nii.gz"))[0]
    inp = tmp_path / "in"
    inp.mkdir()
    for f in (raw / "imagesTr").glob(f"{case}_*.nii.gz"):
        (inp / f.name).write_bytes(f.read_bytes())
    record = json.loads((raw / "instructionsTr" / f"{case}.json").read_text())
    instructions = tmp_path / "instructions.json"
    instructions.write_text(json.dumps({"cases": {case: [e["instruction_short"] for e in record["errors"]][:2]
                                                  + ["Keep the segmentation as it is."]}}))
    out = tmp_path / "out"
    run_cli([cli("nnUNetv2_text_predict"), "-i", str(inp), "-o", str(out), "--instructions", str(instructions),
             "-d", str(COWTALK_ID), "-c", "3d_fullres", "-f", "0", "-tr", TRAINER, "-p", COWTALK_PLANS, "-device", "cpu"],
            nnunet_env)
    manifest = json.loads((out / "refinement.json").read_text())
    steps = manifest["cases"][case]["steps"]
    assert len(steps) == min(2, len(record["errors"])) + 1
    for step, e in zip(steps, record["errors"][:2]):  # each round may edit the vessel it names (TopCoW ids)
        assert step["network_ran"] == (e["type"] != "none") and step["edits"] == ([e["label"]] if e["label"] else [])
    assert steps[-1]["network_ran"] is False and steps[-1]["changed_voxels"] == 0
    src = sitk.ReadImage(str(inp / f"{case}_0000.nii.gz"))
    for s in steps + [{"file": manifest["cases"][case]["final"]}]:
        img = sitk.ReadImage(str(out / s["file"]))
        assert img.GetSize() == src.GetSize()
        np.testing.assert_allclose(img.GetSpacing(), src.GetSpacing())
        np.testing.assert_allclose(img.GetDirection(), src.GetDirection())
        values = set(np.unique(sitk.GetArrayFromImage(img)).tolist())
        assert values <= set(range(13)) | {15}, values  # exported in TopCoW ids (13 -> 15)


def test_a_refiner_that_corrects_nothing_returns_its_input_through_resampling(cowtalk_model, tmp_path):
    """The network's output is the shape prior plus a correction; only the correction goes back to the input's
    geometry. With the correction heads at zero, a case stored at another spacing than the plans' comes back
    voxel for voxel (resampling the whole output moved 35-116 voxels of a phantom case's thin vessels)."""
    from nnunetv2_text.inference.predictor import TextPredictor
    from nnunetv2_text.inference.refine import Refiner

    p = TextPredictor(device=torch.device("cpu"), perform_everything_on_device=False, allow_tqdm=False)
    p.initialize_from_trained_model_folder(str(cowtalk_model["folder"]), (0,), "checkpoint_final.pth")
    p.network.zero_output_heads()
    p.list_of_parameters = [p.network.state_dict()]  # the predictor loads these before each case
    refiner = Refiner(p, "all")
    raw = cowtalk_model["raw"]
    case = sorted(f.name[:-12] for f in (raw / "imagesTr").glob("*_0000.nii.gz"))[0]
    files = []
    for f in sorted((raw / "imagesTr").glob(f"{case}_*.nii.gz")):  # the same voxels, stored at another spacing
        img = sitk.ReadImage(str(f))
        img.SetSpacing([s * k for s, k in zip(img.GetSpacing(), (1.3, 0.8, 1.1))])
        sitk.WriteImage(img, str(tmp_path / f.name))
        files.append(str(tmp_path / f.name))
    outs, _, given = refiner.refine(files, ["Make the left MCA thinner."])
    assert given.any() and np.array_equal(outs[0][0], given)


def _case_copy(raw: Path, tmp_path: Path, name: str = "in"):
    """A copy of the first training case's channel files, and that case's id."""
    case = sorted(p.name[:-12] for p in (raw / "imagesTr").glob("*_0000.nii.gz"))[0]
    inp = tmp_path / name
    inp.mkdir()
    for f in (raw / "imagesTr").glob(f"{case}_*.nii.gz"):
        (inp / f.name).write_bytes(f.read_bytes())
    return case, inp


def _refine(model, env, inp, out, instructions, *extra, check=True):
    return run_cli([cli("nnUNetv2_text_predict"), "-i", str(inp), "-o", str(out), "--instructions",
                    str(instructions), "-d", str(COWTALK_ID), "-c", "3d_fullres", "-f", "0", "-tr", TRAINER, "-p",
                    COWTALK_PLANS, "-device", "cpu", *extra], env, check=check)


def test_no_change_and_empty_rounds_return_the_input_shape_exactly(cowtalk_model, nnunet_env, tmp_path):
    raw = cowtalk_model["raw"]
    case, inp = _case_copy(raw, tmp_path)
    instructions = tmp_path / "i.json"
    instructions.write_text(json.dumps({"cases": {case: ["No correction is needed.", ""]}}))
    out = tmp_path / "out"
    _refine(cowtalk_model, nnunet_env, inp, out, instructions)
    shape_channels = json.loads((raw / "dataset.json").read_text())["cowtalk"]["shape_channels"]
    expected = None
    for ch, original in shape_channels.items():
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(inp / f"{case}_{int(ch):04d}.nii.gz")))
        expected = np.zeros(arr.shape, np.int32) if expected is None else expected
        expected[(arr > 0.5) & (expected == 0)] = int(original)
    steps = json.loads((out / "refinement.json").read_text())["cases"][case]["steps"]
    assert [s["network_ran"] for s in steps] == [False, False]
    assert [s["changed_voxels"] for s in steps] == [0, 0] and all(s["edits"] == [] for s in steps)
    for s in steps:
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / s["file"]))), expected)


def test_bad_refinement_input_is_refused_before_anything_is_written(cowtalk_model, nnunet_env, tmp_path):
    raw = cowtalk_model["raw"]
    case, inp = _case_copy(raw, tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Thin the basilar artery.\n")
    out = tmp_path / "out"
    # a prompt file for a refinement model
    res = run_cli([cli("nnUNetv2_text_predict"), "-i", str(inp), "-o", str(out), "--prompts", str(prompts), "-d",
                   str(COWTALK_ID), "-c", "3d_fullres", "-f", "0", "-tr", TRAINER, "-p", COWTALK_PLANS,
                   "-device", "cpu"], nnunet_env, check=False)
    assert res.returncode == 2 and "refinement model" in res.stderr and not out.exists()
    # one combined label map of prompted structures: a refiner's answer is a label map already
    res = run_cli([cli("nnUNetv2_text_predict"), "-i", str(inp), "-o", str(out), "--prompts", "all", "-d",
                   str(COWTALK_ID), "-c", "3d_fullres", "-f", "0", "-tr", TRAINER, "-p", COWTALK_PLANS,
                   "-device", "cpu", "--save_combined"], nnunet_env, check=False)
    assert res.returncode == 2 and "--save_combined" in res.stderr and not out.exists()
    # more rounds than --max_rounds
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"cases": {case: ["Thin the basilar artery."] * 3}}))
    res = _refine(cowtalk_model, nnunet_env, inp, out, many, "--max_rounds", "2", check=False)
    assert res.returncode == 2 and f"case '{case}': 3 instructions" in res.stderr and not out.exists()
    # an instruction that names no vessel the model knows (the default edit scope needs one)
    vague = tmp_path / "vague.json"
    vague.write_text(json.dumps({"cases": {case: ["Thin the basilar artery.", "Make it look better."]}}))
    res = _refine(cowtalk_model, nnunet_env, inp, out, vague, check=False)
    assert res.returncode == 2 and f"case '{case}', round 2" in res.stderr and "names no vessel" in res.stderr
    assert not out.exists()
    # an instruction that names a vessel but no edit (no verb the edit reader knows)
    verbless = tmp_path / "verbless.json"
    verbless.write_text(json.dumps({"cases": {case: ["Thin the basilar artery.", "The basilar artery, please."]}}))
    res = _refine(cowtalk_model, nnunet_env, inp, out, verbless, check=False)
    assert res.returncode == 2 and f"case '{case}', round 2" in res.stderr and "asks for no edit" in res.stderr
    assert "The basilar artery, please." in res.stderr and not out.exists()
    # a shape channel that is not binary
    one = tmp_path / "one.txt"
    one.write_text("Thin the basilar artery.")
    f = inp / f"{case}_0001.nii.gz"
    img = sitk.ReadImage(str(f))
    arr = sitk.GetArrayFromImage(img)
    arr.flat[0] = 3
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(img)
    sitk.WriteImage(bad, str(f))
    res = _refine(cowtalk_model, nnunet_env, inp, out, one, check=False)
    assert res.returncode == 2 and f"case '{case}': shape channel 1" in res.stderr and f.name in res.stderr
    assert not out.exists() or not any(out.rglob("*.nii.gz"))
    # a missing shape channel
    f.unlink()
    res = _refine(cowtalk_model, nnunet_env, inp, out, one, check=False)
    assert res.returncode == 2 and case in res.stderr and not any(out.rglob("*.nii.gz"))


def test_instructions_for_a_text_model_are_refused(toy_dataset, trained_model, nnunet_env, tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("Thin the basilar artery.")
    out = tmp_path / "out"
    args = predict_args(toy_dataset, trained_model, toy_dataset["raw"] / "imagesTs", out, one)
    args[args.index("--prompts")] = "--instructions"
    res = run_cli(args, nnunet_env, check=False)
    assert res.returncode == 2 and "not a refinement model" in res.stderr and not out.exists()

"""Orientation and position/size prompts: does the answer depend on how a scan is stored?

Every held-out image is predicted as stored and as four copies of the same world image stored
differently (each voxel axis flipped in turn, and the axes permuted), through the real
``nnUNetv2_text_predict``. Measures, written to docs/results/orientation.md:

1. position and size prompts ("the largest / smallest / left-most / ... structure"): the share of
   held-out cases where the answer is the right structure (Dice > 0.8 with the reference mask of the
   concept the reference label map itself picks); cases where the reference's top two candidates lie
   within ``--margin`` mm (at least one voxel) of each other, or within ``--margin`` percent in volume,
   are too close to call and are counted apart;
2. the same on the flipped and permuted storage copies (against the reference stored the same way);
3. the left/right confusion rate of every lateral concept ("left ...", "right ...") on those copies:
   a mask that overlaps the opposite side's reference more than its own side's;
4. agreement in world space between each copy's masks and the original storage's (Dice).

The model is the one ``benchmarks/robustness.py`` trains in the same workdir (TextFusionTrainer_demo);
without it, it is trained here the same way.

    python benchmarks/orientation.py --dataset toy --workdir /tmp/rob_toy --device cpu
    python benchmarks/orientation.py --dataset mni152 --workdir /tmp/rob_mni --device cpu --spacing 6
"""
from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import SimpleITK as sitk
import torch

from nnunetv2_text.demo.pipeline import command, run
from nnunetv2_text.evaluation.metrics import dice
from nnunetv2_text.inference.positions import CRITERIA, choose
from nnunetv2_text.text.vocabulary import load_vocabulary, resolve_vocabulary_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import benchmark_env, device_name, toy_or_mni_parser, write_section  # noqa: E402
from robustness import prepare  # noqa: E402

TRAINER = "TextFusionTrainer_demo"
STORAGES = {"flip_x": "RPS", "flip_y": "LAS", "flip_z": "LPI", "permuted": "SLP"}
PROMPT_OF = {"largest": "the largest structure", "smallest": "the smallest structure",
             "left": "the left-most structure", "right": "the right-most structure",
             "superior": "the upper-most structure", "inferior": "the lower-most structure",
             "anterior": "the front-most structure", "posterior": "the back-most structure"}


def model_ready(env: dict, did: int, plans: str) -> bool:
    return any(Path(env["nnUNet_results"]).glob(f"Dataset{did:03d}_*/{TRAINER}__{plans}__3d_fullres/"
                                                f"fold_all/checkpoint_final.pth"))


def world_centroid(img: sitk.Image) -> Optional[List[float]]:
    idx = np.argwhere(sitk.GetArrayFromImage(img) > 0)
    if not len(idx):
        return None
    return list(img.TransformContinuousIndexToPhysicalPoint([float(v) for v in idx[:, ::-1].mean(0)]))


def binary(img: sitk.Image, values) -> sitk.Image:
    out = sitk.GetImageFromArray(np.isin(sitk.GetArrayFromImage(img), list(values)).astype(np.uint8))
    out.CopyInformation(img)
    return out


def reference_choice(label: sitk.Image, concepts: Dict[str, list], relation: str, margin: float):
    """The concept the reference label map picks, or None when its top two are too close to call."""
    summaries = {}
    for cid, values in concepts.items():
        m = binary(label, values)
        n = int(sitk.GetArrayFromImage(m).sum())
        summaries[cid] = {"voxels": n, "volume_mm3": n * float(np.prod(label.GetSpacing())),
                          "centroid_mm": world_centroid(m)}
    chosen, why = choose(relation, summaries)
    if chosen is None:
        return None
    if CRITERIA[relation][1] is None:  # sizes: the runner-up within `margin` percent of the winner's volume
        return chosen if why["margin"] > margin / 100 * summaries[chosen]["volume_mm3"] else None
    # positions: `margin` mm, and at least one voxel (a 6 mm image cannot place centroids closer)
    return chosen if why["margin"] > max(margin, max(label.GetSpacing())) else None


def opposite(concept_id: str) -> Optional[str]:
    for a, b in (("left_", "right_"), ("right_", "left_")):
        if concept_id.startswith(a):
            return b + concept_id[len(a):]
    return None


def measure(raw: Path, pred: Path, vocab, cases: List[str], margin: float) -> dict:
    manifest = json.loads((pred / "manifest.json").read_text())["cases"]
    singles = {c.id: list(c.labels) for c in vocab.concepts if len(c.labels) == 1}
    ids = {c.id for c in vocab.concepts}
    lateral = {c.id: list(c.labels) for c in vocab.concepts if opposite(c.id) in ids}
    out = {"position": {r: {"original": [0, 0], "stored": [0, 0], "ambiguous": 0} for r in PROMPT_OF},
           "lr": {"n": 0, "confused": 0, "n_original": 0, "confused_original": 0}, "world_dice": []}
    for case in cases:
        label = sitk.ReadImage(str(raw / "labelsTs" / f"{case}.nii.gz"))
        for relation, prompt in PROMPT_OF.items():
            truth = reference_choice(label, singles, relation, margin)
            if truth is None:
                out["position"][relation]["ambiguous"] += 1
                continue
            for key, stored in [("original", None)] + [("stored", s) for s in STORAGES]:
                name = case if stored is None else f"{case}x{stored}"
                mask = sitk.ReadImage(str(pred / manifest[name][prompt]["file"]))
                ref = label if stored is None else sitk.DICOMOrient(label, STORAGES[stored])
                ok = dice(sitk.GetArrayFromImage(mask) > 0,
                          np.isin(sitk.GetArrayFromImage(ref), singles[truth])) > 0.8
                out["position"][relation][key][0] += int(ok)
                out["position"][relation][key][1] += 1
        for cid, values in lateral.items():
            other = opposite(cid)
            for stored in [None, *STORAGES]:
                name = case if stored is None else f"{case}x{stored}"
                mask = sitk.ReadImage(str(pred / manifest[name][vocab.concept(cid).main]["file"]))
                ref = label if stored is None else sitk.DICOMOrient(label, STORAGES[stored])
                arr, lab = sitk.GetArrayFromImage(mask) > 0, sitk.GetArrayFromImage(ref)
                confused = dice(arr, np.isin(lab, lateral[other])) > dice(arr, np.isin(lab, values))
                key = "" if stored is not None else "_original"
                out["lr"][f"n{key}"] += 1
                out["lr"][f"confused{key}"] += int(confused)
        for prompt, rec in manifest[case].items():
            ref_mask = sitk.ReadImage(str(pred / rec["file"]))
            for stored in STORAGES:
                other = sitk.ReadImage(str(pred / manifest[f"{case}x{stored}"][prompt]["file"]))
                back = sitk.Resample(other, ref_mask, sitk.Transform(), sitk.sitkNearestNeighbor)
                out["world_dice"].append(dice(sitk.GetArrayFromImage(back) > 0, sitk.GetArrayFromImage(ref_mask) > 0))
    return out


def section(dataset: str, r: dict, args, minutes: float, n_cases: int) -> str:
    def pct(a, b):
        return f"{100 * a / b:.0f} % ({a}/{b})" if b else "n/a"

    lines = [f"<!-- orientation-{dataset} -->",
             f"## Orientation and position/size prompts: {dataset} ({datetime.date.today().isoformat()}, "
             f"{device_name(torch.device(args.device))})", "",
             f"Command: `python benchmarks/orientation.py --dataset {dataset} --workdir {args.workdir} --device "
             f"{args.device}{' --spacing ' + str(args.spacing) if dataset == 'mni152' else ''}`. Model: "
             f"{TRAINER} (canonical orientation, SimpleITKIOWithReorient), {n_cases} held-out cases, each also "
             f"stored 4 more ways (x, y, z flipped in turn; axes permuted: {', '.join(STORAGES.values())}); "
             f"prediction of all copies took {minutes:.1f} min. Position prompts are answered by composition "
             f"(inference/positions.py).", "",
             "| prompt | correct, as stored (target ≥ 95 %) | correct, flipped/permuted copies | too close to call |",
             "|---|---|---|---|"]
    tot = [0, 0, 0, 0]
    for relation, prompt in PROMPT_OF.items():
        p = r["position"][relation]
        tot = [tot[0] + p["original"][0], tot[1] + p["original"][1], tot[2] + p["stored"][0], tot[3] + p["stored"][1]]
        lines.append(f"| {prompt} | {pct(*p['original'])} | {pct(*p['stored'])} | {p['ambiguous']} |")
    lines.append(f"| **all** | {pct(tot[0], tot[1])} | {pct(tot[2], tot[3])} | |")
    wd = r["world_dice"]
    lines += ["", f"World-space agreement of every prompt's mask between each copy and the original storage: "
                  f"mean Dice {np.mean(wd):.4f}, min {np.min(wd):.4f} ({len(wd)} masks)."]
    if r["lr"]["n"]:
        lines.append(f"Left/right confusion of lateral concepts (a mask overlapping the opposite side's reference "
                     f"more than its own): {pct(r['lr']['confused_original'], r['lr']['n_original'])} as stored, "
                     f"{pct(r['lr']['confused'], r['lr']['n'])} on the flipped/permuted copies (target 0).")
    lines += ["", f"<!-- /orientation-{dataset} -->"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = toy_or_mni_parser(__doc__, "orientation.md", "robustness.py's workdir (its model is reused)")
    p.add_argument("--margin", type=float, default=3.0,
                   help="reference top two closer than this are too close to call: mm (at least one voxel) for "
                        "positions, percent of the volume for sizes")
    args = p.parse_args(argv)
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = benchmark_env(work)
    log = work / "orientation.log"
    did = 995 if args.dataset == "toy" else 996  # robustness.py's datasets
    existing = sorted(Path(env["nnUNet_raw"]).glob(f"Dataset{did}_*"))
    if existing:
        raw, vocab_name = existing[0], "toy_shapes" if args.dataset == "toy" else "mni152"
        plans = "nnUNetResEncUNetDemoPlans" if args.dataset == "toy" else "nnUNetResEncUNetSmallPlans"
    else:
        raw, did, plans, vocab_name = prepare(args.dataset, work, env, log, args.test, args.spacing)
    if not model_ready(env, did, plans):
        run([command("nnUNetv2_train"), str(did), "3d_fullres", "all", "-tr", TRAINER, "-p", plans,
             "-device", args.device], env, log)
    vocab = load_vocabulary(resolve_vocabulary_path(vocab_name))
    inp = work / "orientation_in"
    inp.mkdir(exist_ok=True)
    cases = sorted(f.name[:-len("_0000.nii.gz")] for f in (raw / "imagesTs").glob("*_0000.nii.gz"))
    for case in cases:
        img = sitk.ReadImage(str(raw / "imagesTs" / f"{case}_0000.nii.gz"))
        sitk.WriteImage(img, str(inp / f"{case}_0000.nii.gz"), True)
        for name, code in STORAGES.items():
            sitk.WriteImage(sitk.DICOMOrient(img, code), str(inp / f"{case}x{name}_0000.nii.gz"), True)
    prompts = list(PROMPT_OF.values()) + [c.main for c in vocab.concepts]
    prompt_file = work / "orientation_prompts.txt"
    prompt_file.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    pred = work / "orientation_pred"
    t = time.time()
    run([command("nnUNetv2_text_predict"), "-i", str(inp), "-o", str(pred), "--prompts", str(prompt_file),
         "-d", str(did), "-c", "3d_fullres", "-f", "all", "-tr", TRAINER, "-p", plans, "-device", args.device,
         "-npp", "1", "-nps", "1"], env, log)
    minutes = (time.time() - t) / 60
    result = measure(raw, pred, vocab, cases, args.margin)
    (work / "orientation_results.json").write_text(json.dumps(result, indent=1))
    text = section(args.dataset, result, args, minutes, len(cases))
    write_section(Path(args.out), f"orientation-{args.dataset}", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Merging partially labelled datasets: merge cost at scale, and what partial-label sampling is worth.

1. ``--scale``: 4 synthetic sources with N cases in total (tiny images, links not copies) merged by the
   real ``nnUNetv2_text_merge`` in a fresh process; wall time and peak memory of the merging process and
   of its largest worker, for N and N/4 cases (streamed: memory must not grow with N).
2. ``--ablation``: two toy sources (A labels ball and box, B box and rod; every image shows all three),
   merged, planned, embedded, then trained twice with the demo's schedule: with partial-label sampling
   (``TextFusionTrainer_demo``) and without (``TextFusionTrainer_demoNoPartialLabels``, every unlabelled
   structure taught as absent). Dice of every object on held-out images that show all three.

Results go to a section of docs/results/merge.md.

    python benchmarks/merge.py --workdir /tmp/merge_bench --scale 2000 --ablation --device cpu
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from nnunetv2_text.demo.pipeline import DEMO_PLANS, command, derive_plans, run
from nnunetv2_text.demo.toy import LABELS, write_partial_toy_source, write_toy_dataset
from nnunetv2_text.evaluation.metrics import dice

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import benchmark_env, device_name, write_section  # noqa: E402

HERE = Path(__file__).resolve().parent
TRAINERS = {"partial labels": "TextFusionTrainer_demo", "naive (unlabelled = absent)": "TextFusionTrainer_demoNoPartialLabels",
            "partial labels, empty-target loss": "TextFusionTrainer_demoEmptyLoss",
            "naive, empty-target loss": "TextFusionTrainer_demoEmptyLossNoPartialLabels"}

_MEASURE = """
import resource, sys, time
from pathlib import Path
from dataset_conversion.merge import merge_datasets
if __name__ == "__main__":
    t = time.time()
    merge_datasets(sys.argv[1].split(","), int(sys.argv[2]), "Scale", raw_root=Path(sys.argv[3]), overwrite=True,
                   num_processes=int(sys.argv[4]))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec
    self_kb = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"{time.time() - t:.3f} {self_kb} {child_kb}")
"""


def synthetic_sources(raw: Path, total: int, shape=(16, 16, 16)) -> list:
    """4 sources, each labelling two of four structures, ``total`` training cases in all."""
    rng = np.random.default_rng(0)
    ids = []
    for k in range(4):
        did = 700 + k
        folder = raw / f"Dataset{did}_Syn{k}"
        (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
        (folder / "labelsTr").mkdir(exist_ok=True)
        kinds = [f"s{k}", f"s{(k + 1) % 4}"]
        for i in range(total // 4):
            img = sitk.GetImageFromArray(rng.normal(size=shape).astype(np.float32))
            lab = sitk.GetImageFromArray(rng.integers(0, 3, size=shape).astype(np.uint8))
            sitk.WriteImage(img, str(folder / "imagesTr" / f"c{i:05d}_0000.nii.gz"))
            sitk.WriteImage(lab, str(folder / "labelsTr" / f"c{i:05d}.nii.gz"))
        concepts = [{"id": n, "main": f"structure {n}", "labels": [n],
                     "synonyms": [f"{n} {w}" for w in ("organ", "part", "region", "tissue", "area")]} for n in kinds]
        (folder / "vocabulary.json").write_text(json.dumps({"format": "nnunetv2_text.vocabulary", "version": 1,
                                                            "name": f"Syn{k}", "concepts": concepts}))
        (folder / "dataset.json").write_text(json.dumps({
            "channel_names": {"0": "CT"}, "labels": {"background": 0, kinds[0]: 1, kinds[1]: 2},
            "numTraining": total // 4, "file_ending": ".nii.gz"}))
        ids.append(str(did))
    return ids


def scale(work: Path, total: int, num_processes: int) -> list:
    rows = []
    for n in (max(4, total // 4), total):
        raw = work / f"scale_{n}"
        ids = synthetic_sources(raw, n)
        script = work / "measure_merge.py"  # a file, not -c: spawned workers re-import the main module
        script.write_text(_MEASURE)
        out = subprocess.run([sys.executable, str(script), ",".join(ids), "799", str(raw), str(num_processes)],
                             capture_output=True, text=True, check=True)
        sec, self_kb, child_kb = out.stdout.split()[-3:]
        rows.append({"cases": n, "seconds": float(sec), "peak_main_mib": int(self_kb) / 1024,
                     "peak_worker_mib": int(child_kb) / 1024})
    return rows


def ablation(work: Path, device: str, test_cases: int, repeats: int = 1, trainers=tuple(TRAINERS.values())[:2]
             ) -> dict:
    env = benchmark_env(work / "ablation")
    log = work / "ablation.log"
    raw = Path(env["nnUNet_raw"])
    write_partial_toy_source(raw, 881, "ToyBallBox", ["ball", "box"], num_cases=24, seed=11)
    write_partial_toy_source(raw, 882, "ToyBoxRod", ["box", "rod"], num_cases=24, seed=12)
    run([command("nnUNetv2_text_merge"), "-d", "881", "882", "-o", "883", "-n", "ToyMerged", "-np", "2",
         "--overwrite"], env, log)
    run([command("nnUNetv2_plan_and_preprocess"), "-d", "883", "-pl", "nnUNetPlannerResEncM", "-c", "3d_fullres",
         "-np", "2"], env, log)
    derive_plans(Path(env["nnUNet_preprocessed"]) / "Dataset883_ToyMerged", "nnUNetResEncUNetMPlans", DEMO_PLANS,
                 features=(8, 16, 32, 64), blocks=(1, 1, 2, 2), batch_size=4)
    run([command("nnUNetv2_text_embed"), "-d", "883"], env, log)
    held_out = write_toy_dataset(work / "heldout", 999, "Full", num_cases=0, num_test=test_cases, seed=13,
                                every_object=True)
    prompts = work / "prompts.txt"
    prompts.write_text("ball\nbox\nrod\n")
    done = work / "ablation_runs.json"  # each training takes a quarter of an hour: a rerun resumes
    results = json.loads(done.read_text()) if done.is_file() else {}
    for repeat in range(repeats):
        for trainer in trainers:  # in the order given
            label = next(k for k, v in TRAINERS.items() if v == trainer)
            key = f"{label} (run {repeat + 1})"
            if key in results:
                continue
            run_env = {**env, "nnUNet_results": str(work / "ablation" / f"results_run{repeat + 1}")}
            t = time.time()
            run([command("nnUNetv2_train"), "883", "3d_fullres", "all", "-tr", trainer, "-p", DEMO_PLANS,
                 "-device", device], run_env, log)
            minutes = (time.time() - t) / 60
            pred = work / f"pred_{trainer}_run{repeat + 1}"
            run([command("nnUNetv2_text_predict"), "-i", str(held_out / "imagesTs"), "-o", str(pred), "--prompts",
                 str(prompts), "-d", "883", "-c", "3d_fullres", "-f", "all", "-tr", trainer, "-p", DEMO_PLANS,
                 "-device", device, "-npp", "1", "-nps", "1"], run_env, log)
            manifest = json.loads((pred / "manifest.json").read_text())
            scores = {k: [] for k in ("ball", "box", "rod")}
            for case, recs in manifest["cases"].items():
                ref = sitk.GetArrayFromImage(sitk.ReadImage(str(held_out / "labelsTs" / f"{case}.nii.gz")))
                for k in scores:
                    if (ref == LABELS[k]).any():
                        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(pred / recs[k]["file"]))) > 0
                        scores[k].append(dice(mask, ref == LABELS[k]))
            results[key] = {"minutes": minutes, "scores": scores}
            done.write_text(json.dumps(results, indent=1))
    return results


def render(args, scale_rows, abl) -> str:
    lines = ["<!-- merge -->", f"## Merging partially labelled datasets ({datetime.date.today().isoformat()}, "
             f"{device_name(torch.device(args.device))})", "",
             f"Command: `python benchmarks/merge.py --workdir {args.workdir} --scale {args.scale}"
             f"{f' --ablation --repeats {args.repeats} --trainers ' + ' '.join(args.trainers) if abl else ''} --device {args.device} -np {args.np}`.", ""]
    if scale_rows:
        lines += ["Merge cost (`nnUNetv2_text_merge`, 4 synthetic sources, 16^3 cases, images hard-linked, "
                  f"{args.np} worker processes):", "",
                  "| cases | wall time (s) | cases/s | peak memory, merging process (MiB) | peak memory, largest worker (MiB) |",
                  "| --- | --- | --- | --- | --- |"]
        for r in scale_rows:
            lines.append(f"| {r['cases']} | {r['seconds']:.1f} | {r['cases'] / r['seconds']:.0f} | "
                         f"{r['peak_main_mib']:.0f} | {r['peak_worker_mib']:.0f} |")
        lines.append("")
    if not abl:
        lines += ["The partial-label ablation (`--ablation`, two trainings) was not part of this run.", ""]
    if abl:
        lines += ["Partial-label sampling against the naive merge (unlabelled structures taught as absent). Source A "
                  "labels ball and box, source B box and rod; every image shows all three. 24 + 24 training cases, "
                  f"demo schedule (800 steps), fold `all`, {args.repeats} unseeded training(s) per trainer; Dice "
                  f"on {args.test} held-out images that show all three:", "",
                  "| trainer | ball (mean / min) | box (mean / min) | rod (mean / min) | training (min) |",
                  "| --- | --- | --- | --- | --- |"]
        for label, r in abl.items():
            cells = [f"{np.mean(v):.3f} / {min(v):.3f}" for v in r["scores"].values()]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {r['minutes']:.1f} |")
        lines.append("")
    lines.append("<!-- /merge -->")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--scale", type=int, default=2000, help="cases in the merge-cost run (0: skip)")
    p.add_argument("--ablation", action="store_true", help="train the partial-label ablation (two trainings)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--test", type=int, default=8, help="held-out images of the ablation")
    p.add_argument("--repeats", type=int, default=1, help="trainings per trainer (training is not seeded)")
    p.add_argument("--trainers", nargs="+", choices=tuple(TRAINERS.values()), default=list(TRAINERS.values())[:2])
    p.add_argument("-np", type=int, default=2, help="merge worker processes")
    p.add_argument("--out", default=str(HERE.parent / "docs" / "results" / "merge.md"))
    args = p.parse_args(argv)
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    scale_rows = scale(work, args.scale, args.np) if args.scale else []
    abl = ablation(work, args.device, args.test, args.repeats, args.trainers) if args.ablation else {}
    text = render(args, scale_rows, abl)
    write_section(Path(args.out), "merge", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

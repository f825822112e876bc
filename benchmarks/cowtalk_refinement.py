"""CoWTalk on the phantom: does refinement repair what the instruction names, and only because of the text?

Per error type, on held-out subjects, Dice / clDice / Betti-0 error of
- the erroneous input,
- the refined output with the case's own instruction (all its errors, one round),
- a wrong instruction (the instruction of another held-out case whose error types and classes differ),
- a contrary instruction (the same vessels, the opposite edit: the conversion's inverse sentence),
- no instruction (an empty round; by construction it returns the input),
- multi-round sessions: one error's instruction per round, rounds 1, 2 and 3 (a round without an error
  left is empty),
- the network alone: the right and the contrary instruction with ``--edit_scope all`` (every class may
  change, islands allowed), against the default scope (only the vessels the instruction names, topology
  kept), so the network's own reading of the verb shows; Dice of the named vessels beside the overall one,
with the image and without it (``--no-image`` conversion), as in the paper's Table 1. Written to
docs/results/cowtalk_refinement.md.

Every step is the real command: phantom -> nnUNetv2_text_convert_cowtalk (with a train/test split) ->
nnUNetv2_plan_and_preprocess (ResEncM) -> nnUNetv2_text_embed -> nnUNetv2_train -tr TRAINER ->
nnUNetv2_text_predict --instructions -> nnUNetv2_text_evaluate --cowtalk.

    python benchmarks/cowtalk_refinement.py --workdir /tmp/cowtalk --trainer CoWTalkRefineTrainer_cpuLong \
        --device cpu --subjects 12 --test 3 --variants 8 --small   # the CPU figures of docs/COWTALK.md
    python benchmarks/cowtalk_refinement.py --workdir /tmp/cowtalk --trainer CoWTalkRefineTrainer \
        --device cuda --subjects 10 --test 3 --variants 15        # a GPU, nnU-Net's full schedule
"""
from __future__ import annotations

import csv
import datetime
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from dataset_conversion.cowtalk.instructions import describe_error
from dataset_conversion.cowtalk.phantom import write_phantom_topcow
from nnunetv2_text.demo.pipeline import command, run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, benchmark_env, device_name, git_commit, pipeline_parser, plan_resenc_m  # noqa: E402

DATASET_IDS = {"image": 993, "no image": 992}
ROUNDS = 3


def test_cases(raw: Path) -> Dict[str, dict]:
    recs = [json.loads(f.read_text()) for f in sorted((raw / "instructionsTs").glob("*.json"))]
    return {r["case_id"]: r for r in recs}


def wrong_instruction(case: str, recs: Dict[str, dict]) -> str:
    """The instruction of the next held-out case whose error types and classes share nothing with this one."""
    mine = recs[case]["errors"]
    types, labels = {e["type"] for e in mine}, {e["label"] for e in mine}
    order = list(recs)
    i = order.index(case)
    for other in order[i + 1:] + order[:i]:
        theirs = recs[other]["errors"]
        if all(e["type"] != "none" for e in theirs) and not types & {e["type"] for e in theirs} \
                and not labels & {e["label"] for e in theirs}:
            return recs[other]["instruction_short"]
    raise RuntimeError(f"no held-out case has errors unlike those of {case}: use more --test or --variants")


#: corrections that remove voxels; every other error type is corrected by adding voxels
REMOVING = ("global_thickening", "local_thickening")


def contrary_instruction(case: str, recs: Dict[str, dict]) -> str:
    """Same vessels, opposite edit: the conversion's inverse sentence where the edit has one ('Thin the X.'
    where X must be thickened, 'Remove the X.' where it must be added, 'Shorten the X.' where it must be
    extended), else 'Thin the X.' (a reconnection adds voxels). Against the right instruction it shows
    whether the network reads the verb, not only the vessel (which the default edit scope reads by itself)."""
    rng = np.random.default_rng(0)
    texts = [e.get("inverse_short") or describe_error(
        {"type": "global_thinning" if e["type"] in REMOVING else "global_thickening", "label": e["label"],
         "params": {"radius": 1}}, rng)["instruction_short"] for e in recs[case]["errors"] if e["type"] != "none"]
    return " ".join(texts) if texts else recs[case]["instruction_short"]


def evaluate(folder: Path, raw: Path, env: dict, log: Path) -> Dict[str, dict]:
    report = folder.parent / f"report_{folder.name}"
    run([command("nnUNetv2_text_evaluate"), "--cowtalk", str(raw), "-p", str(folder), "-r", str(raw / "labelsTs"),
         "--vocab", str(raw / "vocabulary.json"), "-o", str(report)], env, log)
    return {r["error_type"]: r for r in csv.DictReader(open(report / "cowtalk_table.csv"))}


def run_mode(mode: str, args, topcow: Path, split: Path, work: Path, env: dict, log: Path, previous: dict) -> dict:
    """One conversion's tables; ``previous`` is this mode's entry of an earlier run's results (for --reuse)."""
    did = DATASET_IDS[mode]
    plans = "nnUNetResEncUNetSmallPlans" if args.small else "nnUNetResEncUNetMPlans"
    checkpoint = Path(env["nnUNet_results"]) / f"Dataset{did}_CoWTalk" / f"{args.trainer}__{plans}__3d_fullres" / \
        "fold_all" / "checkpoint_final.pth"
    if args.reuse and checkpoint.is_file():  # evaluate the model an earlier run of this command trained
        train_s = previous.get("train_s")
    else:
        run([command("nnUNetv2_text_convert_cowtalk"), "-i", str(topcow), "-d", str(did), "--variants",
             str(args.variants), "--modality", "ct", "--split", str(split), "--overwrite"]
            + (["--no-image"] if mode == "no image" else []), env, log)
        plans = plan_resenc_m(did, next(Path(env["nnUNet_raw"]).glob(f"Dataset{did}_*")), env, log, args.small)
        run([command("nnUNetv2_text_embed"), "-d", str(did)], env, log)
        t = time.time()
        run([command("nnUNetv2_train"), str(did), "3d_fullres", "all", "-tr", args.trainer, "-p", plans,
             "-device", args.device], env, log)
        train_s = time.time() - t
    raw = next(Path(env["nnUNet_raw"]).glob(f"Dataset{did}_*"))
    recs = test_cases(raw)
    right = {c: r["instruction_short"] for c, r in recs.items()}
    conditions = {  # name -> (instructions per case, edit scope)
        "right": (right, "named"),
        "wrong": ({c: wrong_instruction(c, recs) for c in recs}, "named"),
        "contrary": ({c: contrary_instruction(c, recs) for c in recs}, "named"),
        "none": ({c: "" for c in recs}, "named"),
        "alone": (right, "all"),
        "contrary alone": ({c: contrary_instruction(c, recs) for c in recs}, "all"),
        "rounds": ({c: ([e["instruction_short"] for e in r["errors"] if e["type"] != "none"] + [""] * ROUNDS)[:ROUNDS]
                    for c, r in recs.items()}, "named"),
    }
    out: Dict[str, Dict[str, dict]] = {}
    mdir = work / mode.replace(" ", "_")
    for name, (spec, scope) in conditions.items():
        ifile = mdir / f"instructions_{name}.json"
        ifile.parent.mkdir(parents=True, exist_ok=True)
        ifile.write_text(json.dumps({"cases": spec}))
        pred = mdir / name.replace(" ", "_")
        shutil.rmtree(pred, ignore_errors=True)
        t = time.time()
        run([command("nnUNetv2_text_predict"), "-i", str(raw / "imagesTs"), "-o", str(pred), "--instructions",
             str(ifile), "-d", str(did), "-c", "3d_fullres", "-f", "all", "-tr", args.trainer, "-p", plans,
             "-device", args.device, "--edit_scope", scope], env, log)
        print(f"{mode}, {name}: predicted in {time.time() - t:.0f} s", flush=True)
        if name != "rounds":
            out[name] = evaluate(pred, raw, env, log)
            continue
        manifest = json.loads((pred / "refinement.json").read_text())
        ending = next(iter(manifest["cases"].values()))["final"][len(next(iter(manifest["cases"]))):]
        for k in range(1, ROUNDS + 1):
            rdir = mdir / f"round{k}"
            shutil.rmtree(rdir, ignore_errors=True)
            rdir.mkdir()
            for case, entry in manifest["cases"].items():
                shutil.copy(pred / entry["steps"][k - 1]["file"], rdir / f"{case}{ending}")
            out[f"round {k}"] = evaluate(rdir, raw, env, log)
    coverage = Counter(e["type"] for r in recs.values() for e in r["errors"])
    return {"tables": out, "coverage": dict(coverage), "train_s": train_s, "plans": plans, "cases": len(recs)}


def fmt(v) -> str:
    return f"{float(v):.3f}" if v not in ("", None, "nan") else "-"


def _f(row: dict, key: str) -> float:
    return float(row.get(key, "nan") or "nan")


def verdict(t: Dict[str, Dict[str, dict]], mode: str) -> List[str]:
    """The issue's targets, counted from the tables (scope off: 'alone', 'contrary alone')."""
    types = [e for e in t["right"] if e not in ("all", "none")]
    lines = []
    for right, contrary, label in (("right", "contrary", "scope on"), ("alone", "contrary alone", "scope off")):
        r, c = t[right]["all"], t[contrary]["all"]
        up = [e for e in types if _f(t[right].get(e, {}), "dice_refined") > _f(t[right][e], "dice_input")]
        gap = _f(r, "dice_named_refined") - _f(c, "dice_named_refined")
        lines.append(f"- {label}: Dice {fmt(r['dice_input'])} -> {fmt(r['dice_refined'])}, Betti-0 error "
                     f"{fmt(r['betti0_input'])} -> {fmt(r['betti0_refined'])}; Dice up on {len(up)} of {len(types)} "
                     f"error types; named-vessel Dice right {fmt(r['dice_named_refined'])} against contrary "
                     f"{fmt(c['dice_named_refined'])} (gap {gap:+.3f}, target >= +0.020).")
    return lines


def section(mode: str, res: dict) -> List[str]:
    t = res["tables"]
    types = list(t["right"])
    minutes = "unknown" if res["train_s"] is None else f"{res['train_s'] / 60:.1f} min"
    lines = [f"### {'With the image' if mode == 'image' else 'Without the image (--no-image)'}", "",
             f"{res['cases']} held-out cases; training {minutes}. Error types among them "
             f"(count of errors): " + ", ".join(f"{k} {v}" for k, v in sorted(res["coverage"].items())) + ".", ""]
    for title, right, contrary, extra in (
            ("Scope on (`--edit_scope named`, the default)", "right", "contrary", ("wrong", "none")),
            ("Scope off (`--edit_scope all`: the network's own reading)", "alone", "contrary alone", ())):
        cols = [right, contrary, *extra]
        lines += [f"{title}:", "", "| error type | cases | Dice in | " + " | ".join(cols) + " | named Dice in | "
                  + " | ".join(cols[:2]) + " | clDice in | right | Betti-0 err in | right | contrary |",
                  "|---" * (9 + len(cols) + 2) + "|"]
        for e in types:
            r = t[right].get(e, {})
            c = t[contrary].get(e, {})
            lines.append(f"| {e} | {r.get('n_cases', '-')} | {fmt(r.get('dice_input'))} | "
                         + " | ".join(fmt(t[k].get(e, {}).get("dice_refined")) for k in cols)
                         + f" | {fmt(r.get('dice_named_input'))} | {fmt(r.get('dice_named_refined'))} | "
                         f"{fmt(c.get('dice_named_refined'))} | {fmt(r.get('cldice_input'))} | "
                         f"{fmt(r.get('cldice_refined'))} | {fmt(r.get('betti0_input'))} | "
                         f"{fmt(r.get('betti0_refined'))} | {fmt(c.get('betti0_refined'))} |")
        lines.append("")
    lines += verdict(t, mode)
    lines += ["", "Multi-round sessions, scope on (one error's instruction per round; an empty round when no error "
              "is left):", "", "| error type | Dice in | round 1 | round 2 | round 3 | Betti-0 err in | round 1 | "
              "round 2 | round 3 |", "|---" * 9 + "|"]
    for e in types:
        rr = [t[f"round {k}"].get(e, {}) for k in range(1, ROUNDS + 1)]
        lines.append(f"| {e} | {fmt(t['right'][e]['dice_input'])} | " + " | ".join(fmt(x.get("dice_refined"))
                                                                                  for x in rr)
                     + f" | {fmt(t['right'][e]['betti0_input'])} | "
                     + " | ".join(fmt(x.get("betti0_refined")) for x in rr) + " |")
    return lines


def main(argv=None) -> int:
    p = pipeline_parser(__doc__, "CoWTalkRefineTrainer_cpu", 7, 3, str(RESULTS / "cowtalk_refinement.md"))
    p.add_argument("--variants", type=int, default=8)
    p.add_argument("--modes", nargs="+", choices=tuple(DATASET_IDS), default=list(DATASET_IDS))
    p.add_argument("--reuse", action="store_true",
                   help="evaluate the model an earlier run in this workdir trained, if it finished")
    args = p.parse_args(argv)
    work = Path(args.workdir).resolve()
    env = benchmark_env(work)
    log = work / "cowtalk.log"
    topcow = work / "topcow"
    subjects = write_phantom_topcow(topcow, n_subjects=args.subjects, modalities=("ct",), seed=0)
    split = work / "split.json"
    split.write_text(json.dumps({"train": subjects[:-args.test], "test": subjects[-args.test:]}))
    results_file = work / "results.json"
    results = json.loads(results_file.read_text()) if args.reuse and results_file.is_file() else {}
    for mode in args.modes:
        results[mode] = run_mode(mode, args, topcow, split, work, env, log, results.get(mode, {}))
        results_file.write_text(json.dumps(results, indent=1))
    device = device_name(torch.device(args.device))
    plans = next(iter(results.values()))["plans"]
    lines = [f"# CoWTalk refinement on the phantom ({datetime.date.today().isoformat()}, {device}, commit "
             f"{git_commit()})", "",
             f"Command: `python benchmarks/cowtalk_refinement.py --trainer {args.trainer} --device {args.device} "
             f"--subjects {args.subjects} --test {args.test} --variants {args.variants}"
             f"{' --small' if args.small else ''}`. Plans `{plans}`, fold all; {args.subjects - args.test} training "
             f"subjects x {args.variants} variants, {args.test} held-out subjects x {args.variants} variants. "
             "'in' is the erroneous input; 'right' the refined output with the case's own (short) instruction, one "
             "round; 'wrong' with the instruction of another held-out case whose error types and classes differ; "
             "'contrary' names the same vessels with the opposite edit (the conversion's inverse sentence where the "
             "edit has one: 'Thin the X.' where X must be thickened, 'Remove the X.' where it must be added; else 'Thin "
             "the X.'); 'none' with an empty instruction. Scope on: only the vessels the instruction names change, "
             "without islands or cuts; scope off ('alone'): the network's output everywhere. Dice and Betti-0 error: "
             "mean over classes present in either mask; named Dice: mean Dice of the vessels the case's errors name; "
             "clDice: the merged vessel mask. A case with several error types counts in each row.", ""]
    for mode, res in results.items():
        lines += section(mode, res) + [""]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""VoxTell's own prompt loop against this plugin's batched decoding, on the same imported weights.

1. One tile: ``voxtell``'s ``VoxTellModel.forward`` (its real behaviour: encoder and prompt decoder once,
   the image decoder once per prompt, in a Python loop) against ``encode`` + one batched ``decode`` of the
   imported network, for 1, 3, 10 and 30 prompts; time and, on CUDA, peak memory; the outputs are
   compared too.
2. A whole case (a CT-like volume) with 10 prompts: VoxTell's predictor (``predict_single_image``, its
   sliding window) against ``TextSegmenter.predict`` on the folder ``nnUNetv2_text_import_voxtell`` wrote.

Both use VoxTell's released configuration (ResEnc-L encoder, 2560-dim text, 2048-dim queries, G = 32) with
random weights; on a CPU the patch is smaller than VoxTell's 192³ (``--patch``), which changes every
absolute figure but not what is compared: the same weights, the same tiles, the same prompts.

    python benchmarks/voxtell_decoding.py --device cpu --patch 64 --case 96 96 80
    python benchmarks/voxtell_decoding.py --device cuda --patch 192 --case 256 256 200   # on a GPU
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, git_commit, sync, write_section  # noqa: E402

from nnunetv2_text.interop.voxtell import VOXTELL_ARCH, VOXTELL_REQUIRES_IMPORT, import_voxtell  # noqa: E402

HERE = Path(__file__).resolve().parent


def voxtell_model(patch: int):
    import pydoc

    from voxtell.model.voxtell_model import VoxTellModel

    class Sized(VoxTellModel):  # VoxTell hard-codes the grid of its positional table for a 192³ patch
        DECODER_CONFIGS = {k: {"channels": v["channels"], "shape": (patch >> k,) * 3}
                           for k, v in VoxTellModel.DECODER_CONFIGS.items()}

    kw = {k: (pydoc.locate(v) if k in VOXTELL_REQUIRES_IMPORT and isinstance(v, str) else v)
          for k, v in VOXTELL_ARCH.items()}
    torch.manual_seed(0)
    return Sized(input_channels=1, **kw, decoder_layer=4, text_embedding_dim=2560, num_maskformer_stages=5,
                 num_heads=32, query_dim=2048, project_to_decoder_hidden_dim=2048, deep_supervision=False).eval()


def measure(fn, device: torch.device, reps: int) -> tuple:
    """(seconds per call, peak CUDA memory in MiB or None, last output); warm up separately."""
    with torch.inference_mode():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            out = fn()
        sync(device)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return (time.perf_counter() - t) / reps, peak, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--patch", type=int, default=64, help="cubic patch (VoxTell: 192)")
    p.add_argument("--case", type=int, nargs=3, default=(96, 96, 80), help="whole-case size (x y z voxels)")
    p.add_argument("--prompts", type=int, nargs="+", default=(1, 3, 10, 30))
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--out", default=str(HERE.parent / "docs" / "results" / "voxtell_decoding.md"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(tempfile.mkdtemp(prefix="voxtell_bench_"))

    vt = voxtell_model(args.patch)
    folder = work / "voxtell"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps({"configurations": {"3d_fullres": {
        "patch_size": [args.patch] * 3, "architecture": {"arch_kwargs": VOXTELL_ARCH,
                                                         "_kw_requires_import": VOXTELL_REQUIRES_IMPORT}}}}))
    torch.save({"network_weights": vt.state_dict()}, folder / "fold_0" / "checkpoint_final.pth")
    names = [f"structure {i}" for i in range(max(args.prompts))]
    bank = np.random.default_rng(0).normal(size=(len(names), 2560)).astype(np.float16)
    np.savez(work / "bank.npz", labels=np.array(names), embeddings=bank)
    imported = import_voxtell(folder, work / "results", 900, embedding_bank=work / "bank.npz")

    from nnunetv2_text.inference.api import TextSegmenter

    seg = TextSegmenter(imported, folds=(0,), device=args.device, use_mirroring=False)
    ours = seg.predictor.network.to(device).eval()
    vt = vt.to(device)
    x = torch.randn(1, 1, *([args.patch] * 3), device=device)
    rows = []
    with torch.inference_mode():  # one warm-up of each (allocator, kernels), not one per prompt count
        one = torch.from_numpy(bank[:1].astype(np.float32))[None].to(device)
        vt(x, one)
        ours.decode(ours.encode(x), one)
    for n in args.prompts:
        text = torch.from_numpy(bank[:n].astype(np.float32))[None].to(device)
        if device.type == "cuda":  # a new batch shape pays for cuDNN plans and allocator growth once: not timed
            try:
                with torch.inference_mode():
                    vt(x, text)
                    ours.decode(ours.encode(x), text)
            except torch.OutOfMemoryError:
                pass
            torch.cuda.empty_cache()
        t_vt, m_vt, o_vt = measure(lambda: vt(x, text), device, args.reps)
        try:
            t_us, m_us, o_us = measure(lambda: ours.decode(ours.encode(x), text), device, args.reps)
            diff = float((o_vt - o_us).abs().max() / o_vt.abs().max())
        except torch.OutOfMemoryError:  # all prompts in one decoder batch: a finding worth a row, not a crash
            t_us = m_us = diff = None
        o_vt = o_us = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
        # what a prediction does: the predictor's chunks, their size measured on a first (untimed) tile
        pred = seg.predictor
        pred.set_prompts(text[0])
        pred.measure_chunk_again()
        with torch.inference_mode():  # the first tiles of a case, until the chunk size is chosen for good
            for _ in range(4):
                pred._decode_all(ours.encode(x), x)
                if pred.prompt_batch_size:
                    break
        t_ch, m_ch, _ = measure(lambda: pred._decode_all(ours.encode(x), x), device, args.reps)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append((n, t_vt, t_us, m_vt, m_us, diff, t_ch, m_ch, pred.prompt_batch_size or pred.chunk_choice or 1))
        print(rows[-1], flush=True)

    # whole case, 10 prompts: VoxTell's predictor against ours on the imported folder
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIOWithReorient
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization
    from voxtell.inference.predictor import VoxTellPredictor

    arr = np.random.default_rng(1).normal(40, 200, size=tuple(reversed(args.case))).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.5, 1.5, 1.5))
    sitk.WriteImage(img, str(work / "case_0000.nii.gz"))
    vp = VoxTellPredictor.__new__(VoxTellPredictor)
    vp.device, vp.normalization = device, ZScoreNormalization(intensityproperties={})
    vp.tile_step_size, vp.perform_everything_on_device, vp.patch_size = 0.5, True, [args.patch] * 3
    vp.network, vp.embedding_bank, vp.tokenizer, vp.text_backbone = vt, None, None, None
    vp.max_text_length, vp._text_encoding_model = 8192, "Qwen/Qwen3-Embedding-4B"
    prompts10 = names[:10]
    emb10 = torch.from_numpy(bank[:10].astype(np.float32))[None].to(device)

    def theirs():
        data, _ = NibabelIOWithReorient().read_images([str(work / "case_0000.nii.gz")])
        return vp.predict_single_image(data, text_embeddings=emb10)

    def mine():
        return seg.predict(str(work / "case_0000.nii.gz"), prompts10)

    sync(device)
    t = time.perf_counter()
    theirs()  # masks are compared voxel for voxel in tests/test_voxtell.py; here only time
    sync(device)
    case_vt = time.perf_counter() - t
    t = time.perf_counter()
    mine()
    sync(device)
    case_us = time.perf_counter() - t
    print("case", case_vt, case_us, flush=True)

    def mib(v):
        return "n/a (CPU)" if v is None else f"{v:.0f}"

    key = "voxtell-decoding" + ("-" + device.type if device.type != "cpu" else "")  # CPU and GPU sections coexist
    lines = [f"<!-- {key} -->",
             f"## VoxTell's prompt loop against batched decoding ({datetime.date.today().isoformat()}, "
             f"{device_name(device)})", "", f"Commit: {git_commit()}.", "",
             f"Command: `python benchmarks/voxtell_decoding.py --device {args.device} --patch {args.patch} --case "
             f"{' '.join(map(str, args.case))} --reps {args.reps}`. VoxTell's released configuration (ResEnc-L, 2560-dim text, "
             f"2048-dim queries, G = 32, 440M parameters) with random weights, imported with "
             f"`nnUNetv2_text_import_voxtell`; patch {args.patch}³ (VoxTell: 192³). \"VoxTell\" is "
             f"`voxtell` 0.1.2's own `VoxTellModel.forward`: encoder and prompt decoder once, the image decoder "
             f"once per prompt. \"one batch\" is this plugin's `encode` + one `decode` of all prompts; "
             f"\"chunked\" what its predictor does: `encode` + the prompts in chunks of the size it chose on the "
             f"first, untimed tiles (`--prompt_batch_size 0`, the default).", "",
             "| prompts | VoxTell forward (s) | one batch (s) | VoxTell / one batch | chunked (s) | VoxTell / chunked "
             "| chunk | peak MiB VoxTell | peak MiB one batch | peak MiB chunked (ratio) | max rel. difference |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, a, b, ma, mb, d, c, mc, k in rows:
        batch = "out of memory | -" if b is None else f"{b:.2f} | {a / b:.2f}x"
        ratio = f"{mib(mc)}" + (f" ({mc / ma:.2f}x)" if mc is not None and ma else "")
        lines.append(f"| {n} | {a:.2f} | {batch} | {c:.2f} | {a / c:.2f}x | {k} | {mib(ma)} | "
                     f"{'-' if b is None else mib(mb)} | {ratio} | {'-' if d is None else f'{d:.1e}'} |")
    lines += ["", f"Whole case {'x'.join(map(str, args.case))} voxels at 1.5 mm, 10 prompts, sliding window "
                  f"(step 0.5, no mirroring): VoxTell's predictor {case_vt:.1f} s, this plugin "
                  f"(`TextSegmenter.predict` on the imported folder, preprocessing included) {case_us:.1f} s "
                  f"({case_vt / case_us:.2f}x).", "", f"<!-- /{key} -->"]
    write_section(Path(args.out), key, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

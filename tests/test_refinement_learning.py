"""The refiner design learns to edit as the instruction says (issue #13), in process and in seconds.

Blobs are thickened or thinned by one voxel as a real MiniLM instruction embedding asks. The suite's
CoWTalk model (tests/test_cowtalk_training.py) trains for a few steps only, too few to learn any edit;
the phantom figures come from benchmarks/cowtalk_refinement.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from nnunetv2_text.network import TextNetworkConfig, build_text_network
from nnunetv2_text.text.encoder import TextEncoder
from test_network import REQ, SMALL, arch

pytestmark = pytest.mark.slow  # trains for about a minute

INSTRUCTIONS = ("Thicken the vessel by one voxel.", "Thin the vessel by one voxel.")


def blobs(rng: np.random.Generator, n: int, size: int = 16) -> np.ndarray:
    """n binary ellipsoids of random centre and radii, none touching the border."""
    z, y, x = np.mgrid[:size, :size, :size]
    out = np.zeros((n, size, size, size), bool)
    for i in range(n):
        c = rng.uniform(6, size - 6, 3)
        r = rng.uniform(2.5, 4.0, 3)
        out[i] = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1
    return out


def edit(shape: np.ndarray, k: int) -> np.ndarray:
    return ndimage.binary_dilation(shape) if k == 0 else ndimage.binary_erosion(shape)


def batch(rng, n, emb):
    shapes = blobs(rng, n)
    ks = rng.integers(0, 2, n)
    x = torch.from_numpy(np.stack([np.stack([s.astype(np.float32) * 0.5 + rng.normal(0, 0.1, s.shape), s])
                                   for s in shapes]).astype(np.float32))
    y = torch.from_numpy(np.stack([edit(s, k) for s, k in zip(shapes, ks)]).astype(np.int64))
    return x, y, ks, torch.from_numpy(emb[ks])[:, None]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


@pytest.fixture(scope="module")
def instruction_embeddings() -> np.ndarray:
    return TextEncoder("default").encode(list(INSTRUCTIONS))


def test_the_right_instruction_beats_the_wrong_one_and_no_edit(instruction_embeddings):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = TextNetworkConfig(text_dim=384, **SMALL, outputs_per_prompt=2, shape_prior_channels=(1,))
    net = build_text_network(arch(4), REQ, 2, cfg, deep_supervision=False)
    net.prompt_decoder.set_text_center(torch.from_numpy(instruction_embeddings))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        x, y, _, text = batch(rng, 4, instruction_embeddings)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x, text), y).backward()
        opt.step()
    net.eval()
    x, y, ks, text = batch(np.random.default_rng(1), 12, instruction_embeddings)
    wrong = torch.from_numpy(instruction_embeddings[1 - ks])[:, None]
    with torch.no_grad():
        right_pred, wrong_pred = net(x, text).argmax(1).numpy() > 0, net(x, wrong).argmax(1).numpy() > 0
    ref, inp = y.numpy() > 0, x[:, 1].numpy() > 0
    d_right = np.mean([dice(p, r) for p, r in zip(right_pred, ref)])
    d_wrong = np.mean([dice(p, r) for p, r in zip(wrong_pred, ref)])
    d_input = np.mean([dice(p, r) for p, r in zip(inp, ref)])
    assert d_right > d_input + 0.05 and d_right > d_wrong + 0.05, (d_right, d_wrong, d_input)
    # volume moves the way the text says
    grew = (right_pred.sum((1, 2, 3)) > inp.sum((1, 2, 3)))
    assert (grew == (ks == 0)).mean() >= 0.9

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


# --------------------------------------------------------------------------- issue #26: the verb decides
NAMED = {1: 7, 2: 5}  # the two vessels' dataset ids -> TopCoW ids (left MCA, right MCA) for the sentences
ERRORS = {"global_thinning": ndimage.binary_erosion, "global_thickening": ndimage.binary_dilation}


def two_vessels(rng: np.random.Generator) -> np.ndarray:
    """A label map with vessel 1 in the left half and vessel 2 in the right half (16 x 16 x 24)."""
    z, y, x = np.mgrid[:16, :16, :24]
    seg = np.zeros((16, 16, 24), np.int64)
    for label, x0 in ((1, 6.0), (2, 18.0)):
        c = (rng.uniform(6, 10), rng.uniform(6, 10), x0 + rng.uniform(-1, 1))
        r = rng.uniform(2.5, 3.5, 3)
        seg[((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1] = label
    return seg


def refinement_pairs(rng: np.random.Generator, n: int, directions: tuple):
    """n CoWTalk-style samples, one error each, made into training pairs by the trainer's own
    ``apply_action`` ('repair' or 'inverse'): image, shape channels, targets, the error and its direction."""
    from nnunetv2_text.training.cowtalk import CoWTalkRefineTrainer

    segs = [two_vessels(rng) for _ in range(n)]
    data = torch.zeros(n, 3, *segs[0].shape)
    target = torch.from_numpy(np.stack(segs))[:, None]
    errors = []
    for b, seg in enumerate(segs):
        label, kind = int(rng.integers(1, 3)), str(rng.choice(list(ERRORS)))
        data[b, 0] = torch.from_numpy((seg > 0) * 0.5 + rng.normal(0, 0.1, seg.shape))
        for k in (1, 2):
            shape = ERRORS[kind](seg == k) if k == label else seg == k
            data[b, k] = torch.from_numpy(shape.astype(np.float32))
        direction = str(rng.choice(directions))
        CoWTalkRefineTrainer.apply_action(data, [target], b, label, label, direction)
        errors.append(({"type": kind, "label": NAMED[label], "params": {"radius": 1}}, label, direction))
    return data, target[:, 0], errors


def sentence(error: dict, direction: str, rng: np.random.Generator) -> str:
    from dataset_conversion.cowtalk.instructions import describe_error, describe_inverse

    if direction == "repair":
        return describe_error(error, rng)["instruction_short"]
    return describe_inverse(error, rng)["inverse_short"]


def verb_scores(direction_channels: bool, edit_voxel_weight: float = 0.0, seed: int = 0) -> dict:
    """Named-vessel Dice of a refiner trained 150 steps on repairs and their inverses (the conversion's own
    sentences, MiniLM embeddings, the trainer's own pair making), answering held-out repairs with the right
    and the contrary instruction; with ``direction_channels`` the network also gets, as CoWTalkRefineTrainer
    and the refiner give it, the grow/shrink channels the scope's rule reads from each sentence; with
    ``edit_voxel_weight`` the trainer's edit-voxel term is added to the cross-entropy."""
    from types import SimpleNamespace

    from dataset_conversion.cowtalk.convert import contiguous_vocabulary
    from nnunetv2_text.training.cowtalk import CoWTalkRefineTrainer
    from nnunetv2_text.training.loss import EditVoxelLoss
    from nnunetv2_text.text.instructions import direction_vector, edit_directions
    from nnunetv2_text.text.vocabulary import parse_vocabulary

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vocab = parse_vocabulary(contiguous_vocabulary())
    test_label = {v: k for k, v in NAMED.items()}  # the sentences' vessel ids -> this test's labels
    encoder, cache = TextEncoder("default"), {}

    def inputs(x, sentences):
        new = [t for t in dict.fromkeys(sentences) if t not in cache]
        if new:
            cache.update(zip(new, encoder.encode(new)))
        text = torch.from_numpy(np.stack([cache[t] for t in sentences]))[:, None]
        if not direction_channels:
            return x, text
        ways = [{test_label[c]: w for c, w in edit_directions(s, vocab).items()} for s in sentences]
        assert all(len(w) == 1 for w in ways), sentences  # every sentence names its vessel and its way
        planes = torch.from_numpy(np.stack([direction_vector(w, 3) for w in ways]))
        return torch.cat([x, planes[..., None, None, None].expand(*planes.shape, *x.shape[2:])], 1), text

    cfg = TextNetworkConfig(text_dim=384, **SMALL, outputs_per_prompt=3, shape_prior_channels=(1, 2),
                            direction_channels=direction_channels)
    net = build_text_network(arch(4), REQ, 3, cfg, deep_supervision=False)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    ce = lambda logits, target: torch.nn.functional.cross_entropy(logits, target[:, 0])  # noqa: E731
    loss = EditVoxelLoss(ce, edit_voxel_weight) if edit_voxel_weight else ce
    shapes = SimpleNamespace(shape_channel_of={1: 1, 2: 2})
    for _ in range(150):
        x, y, errors = refinement_pairs(rng, 4, ("repair", "inverse"))
        if edit_voxel_weight:
            loss.set_edits(CoWTalkRefineTrainer.edit_masks(shapes, x, [y[:, None]],
                                                           [(b, k) for b, (_, k, _) in enumerate(errors)]))
        x, text = inputs(x, [sentence(e, d, rng) for e, _, d in errors])
        opt.zero_grad()
        loss(net(x, text), y[:, None]).backward()
        opt.step()
    net.eval()
    held = np.random.default_rng(seed + 1)
    x, y, errors = refinement_pairs(held, 16, ("repair",))
    scores = {}
    for name, direction in (("right", "repair"), ("contrary", "inverse")):
        with torch.no_grad():
            pred = net(*inputs(x, [sentence(e, direction, held) for e, _, _ in errors])).argmax(1).numpy()
        scores[name] = np.mean([dice(pred[b] == k, y[b].numpy() == k) for b, (_, k, _) in enumerate(errors)])
    scores["input"] = np.mean([dice(x[b, k].numpy() > 0, y[b].numpy() == k) for b, (_, k, _) in enumerate(errors)])
    return scores


def test_inverse_pairs_make_the_refiner_read_the_verb():
    """Trained on repairs and their inverses (the same vessel thickened or thinned from the same shape), the
    refiner's output on the named vessel follows the verb: the contrary instruction does worse than the
    right one. The conversion's own sentences, MiniLM embeddings, the trainer's own pair making.

    Measured (seeded, CPU): named-vessel Dice right 0.80, contrary 0.64, input 0.61. Trained on repairs only,
    the same 150 steps give right 0.90 and contrary 0.90: the shape alone tells the direction, the verb is
    ignored, and this test fails."""
    scores = verb_scores(direction_channels=False)
    assert scores["right"] > scores["contrary"] + 0.05 and scores["right"] > scores["input"], scores


def test_direction_channels_make_the_verb_decide():
    """The refiner's direction channels (issue #26): the rule the scope uses reads which vessel grows or
    shrinks from the sentence (``edit_directions``), and the network gets that as input channels beside the
    sentence embedding, as CoWTalkRefineTrainer and the refiner give it. Trained on repairs and their
    inverses, the contrary instruction must do worse than the right one on the named vessel, by more than
    the sentence embedding alone achieves in the test above.

    Measured (seeded, CPU, the same 150 steps and pairs): right 0.79, contrary 0.49, input 0.61; the
    embedding alone gave 0.80 / 0.64. The contrary instruction now moves the vessel the wrong way."""
    scores = verb_scores(direction_channels=True)
    assert scores["right"] > scores["contrary"] + 0.1 and scores["right"] > scores["input"], scores

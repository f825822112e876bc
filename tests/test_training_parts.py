"""Prompt sampling, per-prompt targets and the left-right axis, without running nnU-Net."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunetv2_text.text.vocabulary import parse_vocabulary
from nnunetv2_text.utils.laterality import left_right_axis_from_properties, mirror_axes_without
from nnunetv2_text.training.prompts import ConceptTargets, PromptSampler

SYN = ["s1", "s2", "s3", "s4", "s5"]


def vocab():
    cs = [{"id": n, "main": n, "labels": l, "synonyms": [f"{n} {s}" for s in SYN]}
          for n, l in (("a", [1]), ("b", [2]), ("c", [3]), ("ab", [1, 2]))]
    return parse_vocabulary({"concepts": cs}, "v")


def terms(v):
    return v.all_terms()


def seg_with(labels, shape=(6, 6, 6)):
    s = torch.zeros(1, *shape, dtype=torch.long)
    for i, lab in enumerate(labels):
        s[0, i] = lab
    return s


def test_positive_and_negative_prompts_and_their_targets():
    v = vocab()
    sampler = PromptSampler(v, terms(v), num_positive=2, num_negative=1, seed=0)
    targets = ConceptTargets(v, torch.device("cpu"))
    seg = torch.stack([seg_with([1, 2]), seg_with([3])])  # sample 0: a, b present; sample 1: c present
    for _ in range(20):
        pb = sampler.sample(seg)
        assert pb.term_ids.shape == (2, 3) and pb.positive.shape == (2, 3)
        t = targets(seg, pb.concept_ids)
        for b in range(2):
            for n in range(3):
                cid = int(pb.concept_ids[b, n])
                expected = np.isin(seg[b, 0].numpy(), list(v.concepts[cid].labels))
                np.testing.assert_array_equal(t[b, n].numpy() > 0, expected)
                assert bool(pb.positive[b, n]) == bool(expected.any())  # negatives have empty targets
        # sample 1 has one present concept: the free positive slot is filled with another negative
        assert pb.positive[1].tolist() == [True, False, False]
        assert pb.positive[0].tolist() == [True, True, False]


def test_main_term_about_a_quarter_of_the_time():
    v = vocab()
    sampler = PromptSampler(v, terms(v), main_term_probability=0.25, seed=1)
    main = set(sampler.main_ids)
    picks = [sampler.term_for(0) for _ in range(4000)]
    frac = np.mean([p in main for p in picks])
    assert 0.21 < frac < 0.29
    assert len(set(picks)) == 6  # the main term and all five synonyms are used


def test_a_vocabulary_smaller_than_the_prompts_per_sample_prompts_every_concept_once():
    """Many prompts per sample (the shared decoder's, issue #23) on a vocabulary with fewer concepts: each
    concept once, present ones as positives, whatever the patch shows."""
    v = parse_vocabulary({"concepts": [{"id": k, "main": k, "labels": [i + 1], "synonyms": [f"{k} {s}" for s in SYN]}
                                       for i, k in enumerate("abc")]}, "v")
    sampler = PromptSampler(v, v.all_terms(), num_positive=32, num_negative=1, seed=0)
    batch = sampler.sample(torch.stack([seg_with([1]), seg_with([1, 3])]))
    for concepts, positive, present in zip(batch.concept_ids.tolist(), batch.positive.tolist(), ({0}, {0, 2})):
        assert sorted(concepts) == [0, 1, 2]
        assert {c for c, p in zip(concepts, positive) if p} == present
    # a partially labelled case (its source annotates a and b) is padded to the vocabulary's size, not to 33
    batch = sampler.sample(torch.stack([seg_with([1])]), annotated=[{0, 1}])
    assert batch.concept_ids.shape[1] == 3 and set(batch.concept_ids[0].tolist()) == {0, 1}


IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)


@pytest.mark.parametrize("direction, transpose, expected", [
    (IDENTITY, [0, 1, 2], 2),                      # sitk x (left-right) is the last array axis
    (IDENTITY, [2, 0, 1], 0),                      # ... moved to the front by the plans' transpose
    ((0, 1, 0, 1, 0, 0, 0, 0, 1), [0, 1, 2], 1),   # image y runs along world x
    ((0, 0, -1, 0, 1, 0, 1, 0, 0), [0, 1, 2], 0),  # sagittal stack: image z runs along world x
])
def test_left_right_axis_from_sitk_direction(direction, transpose, expected):
    assert left_right_axis_from_properties({"sitk_stuff": {"direction": direction}}, transpose) == expected


def test_left_right_axis_from_nibabel_affine_and_unknown():
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    assert left_right_axis_from_properties({"nibabel_stuff": {"original_affine": affine}}, [0, 1, 2]) == 2
    assert left_right_axis_from_properties({}, [0, 1, 2]) is None


def test_mirror_axes_drop_left_right_or_everything_when_unknown():
    assert mirror_axes_without((0, 1, 2), 2) == (0, 1)
    assert mirror_axes_without((0, 1, 2), None) == ()
    assert mirror_axes_without(None, 1) is None


@pytest.mark.parametrize("name", ["TextFusionTrainer", "TextFusionTrainer_5epochs", "TextFusionTrainer_noDS",
                                  "TextFusionTrainer_lateFusion", "CoWTalkRefineTrainer"])
def test_nnunet_finds_the_trainers_through_nnUNet_extTrainer(name, monkeypatch):
    """The lookup nnUNetv2_train and the predictor use; the class must come from the installed package."""
    import os

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunetv2_text.training import EXT_TRAINER_FOLDER
    monkeypatch.setenv("nnUNet_extTrainer", EXT_TRAINER_FOLDER)
    cls = recursive_find_trainer_class_by_name(name)
    assert cls.__name__ == name and cls.__module__.startswith("nnunetv2_text.training.")
    assert os.path.isdir(EXT_TRAINER_FOLDER)


def test_variants_change_one_thing():
    from nnunetv2_text.training.trainer import TextFusionTrainer
    from nnunetv2_text.training.variants import TextFusionTrainer_5epochs, TextFusionTrainer_lateFusion

    assert TextFusionTrainer_5epochs.epochs == 5 and TextFusionTrainer.epochs == 1000
    assert TextFusionTrainer_lateFusion.network_overrides == {"fusion_stages": (-1,)}


def test_new_trainings_get_the_shared_decoder_unless_a_variant_names_another_design():
    """Issue #25: the shared decoder is the default for new trainings; the variants that name a design keep it,
    and VoxTell's arithmetic (every stage per prompt) is untouched. The design a trainer asks for is what its
    network config gets (``TextTrainerBase.initialize``); the checkpoint then stores it."""
    from nnunetv2_text.network import TextNetworkConfig
    from nnunetv2_text.training.trainer import TextFusionTrainer
    from nnunetv2_text.training.variants import (TextFusionTrainer_demo, TextFusionTrainer_everyStage,
                                                 TextFusionTrainer_lateFusion, TextFusionTrainer_light,
                                                 TextFusionTrainer_shared)
    from nnunetv2_text.training.voxtell import TextFusionTrainer_VoxTell

    def config(cls) -> TextNetworkConfig:
        trainer = cls.__new__(cls)  # the overrides read class attributes only: no plans needed
        return TextNetworkConfig(text_dim=384, **trainer.network_config_overrides())

    for cls in (TextFusionTrainer, TextFusionTrainer_shared, TextFusionTrainer_demo):
        assert config(cls).shared_decoder, cls.__name__
    every = config(TextFusionTrainer_everyStage)
    assert not every.shared_decoder and every.light_stages == 0 and every.fusion_stages is None
    light = config(TextFusionTrainer_light)
    assert not light.shared_decoder and light.light_stages == 2
    late = config(TextFusionTrainer_lateFusion)
    assert not late.shared_decoder and late.fusion_stages == (-1,)
    voxtell = config(TextFusionTrainer_VoxTell)
    assert not voxtell.shared_decoder and voxtell.light_stages == 0 and voxtell.final_output == "dot"
    # an old checkpoint's config, written before the shared decoder existed, builds every stage per prompt
    old = {k: v for k, v in every.to_dict().items() if k != "shared_decoder"}
    assert TextNetworkConfig.from_dict(old) == every


def test_prompts_per_sample_follow_the_decoder():
    """A prompt costs a read-out on the shared decoder and a whole decoder elsewhere: the default trainers
    prompt ``SHARED_DECODER_PROMPTS`` present concepts per sample on the first, 2 on the others; a variant's
    own count wins."""
    from nnunetv2_text.network import TextNetworkConfig
    from nnunetv2_text.training.trainer import TextFusionTrainer
    from nnunetv2_text.training.variants import (TextFusionTrainer_demo, TextFusionTrainer_everyStage,
                                                 TextFusionTrainer_light)
    from nnunetv2_text.training.voxtell import TextFusionTrainer_VoxTell

    def prompts(cls) -> int:
        trainer = cls.__new__(cls)
        trainer.text_config = TextNetworkConfig(text_dim=384, **trainer.network_config_overrides())
        return trainer.positive_prompts()

    assert prompts(TextFusionTrainer) == prompts(TextFusionTrainer_demo) == TextFusionTrainer.SHARED_DECODER_PROMPTS > 2
    for cls in (TextFusionTrainer_everyStage, TextFusionTrainer_light, TextFusionTrainer_VoxTell):
        assert prompts(cls) == 2, cls.__name__
    own = type("TextFusionTrainer_eight", (TextFusionTrainer,), {"num_positive_prompts": 8})
    assert prompts(own) == 8
    from nnunetv2_text.training.variants import TextFusionTrainer_32prompts
    assert prompts(TextFusionTrainer_32prompts) == 32 < prompts(TextFusionTrainer)


def test_noDS_freezes_the_unused_heads_before_ddp_wrapping():
    """Built through the trainer's builder hook: without deep supervision every trainable parameter
    gets a gradient from the final output alone (what DDP requires)."""
    import types

    import torch

    from nnunetv2_text.network import TextNetworkConfig
    from nnunetv2_text.training.variants import TextFusionTrainer_noDS
    from test_network import REQ, arch

    trainer = object.__new__(TextFusionTrainer_noDS)  # only what the hook reads, no dataset needed
    trainer.text_config = TextNetworkConfig(text_dim=8, prompt_dim=16, prompt_layers=1, prompt_heads=2,
                                            prompt_ffn_dim=16, adapter_hidden=16)
    trainer.text = types.SimpleNamespace(prompt_embeddings=lambda: np.eye(8, dtype=np.float32)[:5])
    cm = types.SimpleNamespace(network_arch_init_kwargs=arch(4), network_arch_init_kwargs_req_import=REQ)
    net = trainer.build_network_architecture(None, cm, 1, 2, enable_deep_supervision=False)
    # the hook also centres prompts on the vocabulary's mean embedding
    torch.testing.assert_close(net.prompt_decoder.text_center, torch.tensor([0.2] * 5 + [0.0] * 3))
    net(torch.randn(1, 1, 16, 16, 16), torch.randn(1, 2, 8)).sum().backward()
    assert not [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]


def test_foreign_prompts_take_an_absent_concepts_place_and_never_a_present_ones():
    """With foreign_probability 1 every sample gets a pool prompt with an empty target. Where the patch lacks
    a concept the foreign prompt replaces it; where it shows every concept the foreign prompt is added and all
    present prompts stay, and the other samples repeat a present concept to match (never another empty
    target). ``foreign_replaces_present`` gives the earlier rule, which dropped a present prompt."""
    import torch

    from nnunetv2_text.text.vocabulary import load_vocabulary, resolve_vocabulary_path
    from nnunetv2_text.training.prompts import ConceptTargets, PromptSampler, foreign_concept_id

    vocab = load_vocabulary(resolve_vocabulary_path("toy_shapes"))
    pool = ["hello world", "red car", "liver"]
    terms = vocab.all_terms() + pool
    foreign = foreign_concept_id(vocab)
    targets = ConceptTargets(vocab, torch.device("cpu"))
    every = torch.ones(1, 1, 4, 4, 4, dtype=torch.long)
    every[:, :, :2] = 2
    every[:, :, 3] = 3                   # ball, box, rod (so all four concepts) present
    no_rod = every.clone()
    no_rod[no_rod == 3] = 1              # ball, box (and "all shapes") present, rod absent

    sampler = PromptSampler(vocab, terms, 2, 1, seed=0, foreign=pool, foreign_probability=1.0)
    for _ in range(30):
        pb = sampler.sample(no_rod.repeat(2, 1, 1, 1, 1))  # each sample has an absent concept: replaced
        assert pb.concept_ids.shape == (2, 3) and (pb.concept_ids[:, 2] == foreign).all()
        assert pb.positive[:, :2].all() and not pb.positive[:, 2].any()
        assert {terms[t] for t in pb.term_ids[:, 2].tolist()} <= set(pool)
        pb = sampler.sample(torch.cat([every, no_rod]))     # sample 0 shows everything: added
        assert pb.concept_ids.shape == (2, 4)
        assert pb.concept_ids[0].tolist()[3] == foreign and pb.positive[0].tolist() == [True] * 3 + [False]
        ids, pos = pb.concept_ids[1].tolist(), pb.positive[1].tolist()
        assert ids[2] == foreign and ids.count(foreign) == 1 and pos == [True, True, False, True]
        assert ids[3] in ids[:2]  # the padding repeats a present concept of sample 1
        t = targets(torch.cat([every, no_rod]), pb.concept_ids)
        assert t[0, 3].sum() == 0 and t[1, 2].sum() == 0 and t[0, :3].flatten(1).sum(1).min() > 0

    # partial labels: the ball annotated and present, the rod annotated and absent; the fill repeats the
    # ball after the rod, and the foreign prompt still takes the rod's place rather than adding a second empty
    for _ in range(20):
        ids, pos = sampler.sample_concepts({1}, {0, 2})
        assert len(ids) == 3 and pos.count(False) == 1 and ids[pos.index(False)] == foreign and 0 in ids
    # a patch showing nothing, batched with one that gets an added foreign prompt: its padding repeats an
    # absent concept, never the foreign one
    for _ in range(20):
        pb = sampler.sample(torch.cat([every, torch.zeros_like(every)]))
        assert pb.concept_ids.shape == (2, 4) and pb.concept_ids[1].tolist().count(foreign) == 1

    old = PromptSampler(vocab, terms, 2, 1, seed=0, foreign=pool, foreign_probability=1.0,
                        foreign_replaces_present=True).sample(every.repeat(3, 1, 1, 1, 1))
    assert old.concept_ids.shape == (3, 3) and (old.concept_ids[:, 2] == foreign).all()
    plain = PromptSampler(vocab, terms, 2, 1, seed=0, foreign=pool, foreign_probability=0.0).sample(every)
    assert plain.concept_ids.shape == (1, 3) and (plain.concept_ids < foreign).all()


def test_empty_target_loss_teaches_empty_answers_where_soft_dice_cannot():
    """An empty-target prompt answered with a structure-sized blob: nnU-Net's Dice + BCE barely pushes it
    down (its Dice is flat there, its BCE is spread over the patch); the empty-target term does, and
    leaves prompts with a target alone."""
    from nnunetv2_text.training.loss import EmptyTargetLoss, prompt_dice_bce_loss as base

    target = torch.zeros(1, 2, 32, 32, 32)
    target[0, 0, :8, :8, :8] = 1  # prompt 0: a structure of 512 voxels; prompt 1: nothing
    blob = torch.full((1, 2, 32, 32, 32), -6.0)
    blob[:, :, :8, :8, :8] = 2.0  # both prompts answer with the same blob
    grads = {}
    for name, loss in (("base", base()), ("empty", EmptyTargetLoss(base(), tolerance=0.01))):
        x = blob.clone().requires_grad_(True)
        loss(x, target).backward()
        grads[name] = x.grad[0, 1, :8, :8, :8].sum().item()  # > 0: gradient descent lowers the blob
    assert grads["empty"] > 2 * grads["base"] > 0, grads
    # no empty target: the term adds nothing
    full = target[:, :1]
    assert torch.equal(EmptyTargetLoss(base(), 0.01)(blob[:, :1], full), base()(blob[:, :1], full))
    with pytest.raises(ValueError, match="fraction"):
        EmptyTargetLoss(base(), 5)


def test_edit_masks_mark_only_what_the_instruction_asks_to_change():
    """The voxels where an instructed vessel's input shape and its target differ, at every target scale;
    another vessel's (uninstructed) difference and another sample are left out."""
    from types import SimpleNamespace

    from nnunetv2_text.training.cowtalk import CoWTalkRefineTrainer

    target = torch.zeros(2, 1, 8, 8, 8)
    target[:, 0, 2:6, 2:6, 1:3] = 1   # vessel 1
    target[:, 0, 2:6, 2:6, 5:7] = 2   # vessel 2
    data = torch.zeros(2, 3, 8, 8, 8)
    data[:, 1] = (target[:, 0] == 1).float()
    data[:, 2] = (target[:, 0] == 2).float()
    data[0, 1, 2:6, 2:6, 0] = 1       # sample 0: vessel 1 thickened (instructed)
    data[0, 2, 2:6, 2:6, 5] = 0       # sample 0: vessel 2 thinned (not instructed)
    data[1, 1, 2:6, 2:6, 0] = 1       # sample 1: the same error, not instructed
    half = target[:, :, ::2, ::2, ::2].clone()
    trainer = SimpleNamespace(shape_channel_of={1: 1, 2: 2})
    full, low = CoWTalkRefineTrainer.edit_masks(trainer, data, [target, half], [(0, 1)])
    expected = torch.zeros_like(full)
    expected[0, 0, 2:6, 2:6, 0] = True
    assert torch.equal(full, expected)
    assert low.shape == half.shape and low[0].sum() > 0 and low[1].sum() == 0


def test_edit_voxel_loss_adds_cross_entropy_over_the_edit_only_while_edits_are_set():
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss

    from nnunetv2_text.training.loss import EditVoxelLoss

    base = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False}, {})
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 6, 6)
    target = torch.randint(0, 3, (2, 1, 6, 6, 6)).float()
    edit = torch.zeros(2, 1, 6, 6, 6, dtype=torch.bool)
    edit[1, 0, :2] = True
    loss = EditVoxelLoss(base, weight=2.0)
    assert torch.equal(loss(logits, target), base(logits, target))  # nothing set: nnU-Net's loss
    loss.set_edits([edit])
    logp = torch.log_softmax(logits, 1).gather(1, target.long())
    expected = base(logits, target) - 2.0 * logp[edit].mean()
    assert torch.allclose(loss(logits, target), expected)
    assert torch.equal(loss(logits[..., :3], target[..., :3]), base(logits[..., :3], target[..., :3]))  # other scale
    loss.set_edits([])
    assert torch.equal(loss(logits, target), base(logits, target))
    with pytest.raises(ValueError, match="positive"):
        EditVoxelLoss(base, 0)

"""The text-fused network on its own: shapes, gradients, deep supervision, prompt batching."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunetv2_text.network import TextNetworkConfig, build_text_network
from nnunetv2_text.network.blocks import sinusoidal_positions_3d

REQ = ["conv_op", "norm_op", "dropout_op", "nonlin"]
SMALL = dict(prompt_dim=32, prompt_layers=1, prompt_heads=4, prompt_ffn_dim=64, adapter_hidden=32, guidance_dim=8)


def arch(n_stages: int, strides=None, features=None) -> dict:
    """ResEnc arch kwargs as nnU-Net's ResEnc planners write them into the plans."""
    strides = strides or [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1)
    return {"n_stages": n_stages, "features_per_stage": features or [4 * 2 ** i for i in range(n_stages)],
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [[3, 3, 3]] * n_stages, "strides": strides,
            "n_blocks_per_stage": [1] * n_stages, "n_conv_per_stage_decoder": [1] * (n_stages - 1),
            "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}


def net_for(n_stages=4, ds=True, in_ch=1, text_dim=24, strides=None, **overrides):
    torch.manual_seed(0)
    cfg = TextNetworkConfig(text_dim=text_dim, **{**SMALL, **overrides})
    return build_text_network(arch(n_stages, strides), REQ, in_ch, cfg, deep_supervision=ds)


def ds_scales(strides):
    """nnU-Net's deep-supervision scales (nnUNetTrainer._get_deep_supervision_scales)."""
    return list(list(i) for i in 1 / np.cumprod(np.vstack(strides), axis=0))[:-1]


@pytest.mark.parametrize("n_stages", [3, 4, 5])
@pytest.mark.parametrize("n_prompts", [1, 2, 3, 4])
def test_output_shapes_match_prompts_and_nnunet_ds_scales(n_stages, n_prompts):
    strides = [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1)
    net = net_for(n_stages, strides=strides)
    size = max(16, 2 ** n_stages)  # the bottleneck keeps at least 2 voxels per axis (instance norm)
    x, patch = torch.randn(2, 1, size, size, size), np.array([size] * 3)
    out = net(x, torch.randn(2, n_prompts, 24))
    assert isinstance(out, list) and len(out) == n_stages - 1
    for o, scale in zip(out, ds_scales(strides)):
        assert tuple(o.shape) == (2, n_prompts, *(patch * np.array(scale)).astype(int))
    net.decoder.deep_supervision = False
    assert tuple(net(x, torch.randn(2, n_prompts, 24)).shape) == (2, n_prompts, *patch)


def test_anisotropic_strides_and_patch():
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
    net = net_for(4, strides=strides)
    out = net(torch.randn(1, 1, 8, 24, 32), torch.randn(1, 3, 24))
    assert [tuple(o.shape[2:]) for o in out] == [(8, 24, 32), (8, 12, 16), (4, 6, 8)]


def test_gradient_reaches_every_fusion_stage_adapter_and_prompt_decoder():
    net = net_for(4)
    out = net(torch.randn(2, 1, 16, 16, 16), torch.randn(2, 3, 24))
    sum(o.float().pow(2).mean() for o in out).backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert len(net.adapters) == 3 == len(net.decoder.stages)
    for s, adapter in net.adapters.items():
        assert adapter.mlp[-1].weight.grad.abs().sum() > 0, f"adapter of stage {s} got no gradient"
    assert net.prompt_decoder.text_proj[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("design", [{}, {"light_stages": 2}, {"shared_decoder": True}])
def test_text_changes_output_and_prompts_are_independent(design):
    net = net_for(4, **design).eval()
    x, t = torch.randn(1, 1, 16, 16, 16), torch.randn(1, 3, 24)
    with torch.no_grad():
        together = net(x, t)[0]
        alone = torch.cat([net(x, t[:, i:i + 1])[0] for i in range(3)], 1)
        swapped = net(x, t[:, [1, 0, 2]])[0]
    # batching prompts changes nothing; swapping prompts swaps the output channels; text matters
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(swapped, together[:, [1, 0, 2]], rtol=1e-4, atol=1e-4)
    assert (together[:, 0] - together[:, 1]).abs().max() > 1e-4


def test_prompts_are_centred_on_the_vocabulary_mean_stored_with_the_weights():
    net = net_for(3).eval()
    x, vocab = torch.randn(1, 1, 16, 16, 16), torch.nn.functional.normalize(torch.randn(6, 24), dim=-1)
    net.prompt_decoder.set_text_center(vocab)
    torch.testing.assert_close(net.state_dict()["prompt_decoder.text_center"], vocab.mean(0))
    shift = torch.randn(24)
    with torch.no_grad():
        before = net(x, vocab[None, :3])[0]
        net.prompt_decoder.set_text_center(vocab + shift)
        # a common component shared by the vocabulary and the prompts is removed before the network sees it
        torch.testing.assert_close(net(x, (vocab + shift)[None, :3])[0], before, rtol=1e-4, atol=1e-4)
        # ... and only that: the centre changes what a prompt means
        assert (net(x, vocab[None, :3])[0] - before).abs().max() > 1e-3
    fresh = net_for(3)
    fresh.load_state_dict(net.state_dict())
    torch.testing.assert_close(fresh.prompt_decoder.text_center, (vocab + shift).mean(0))


def test_shared_prompts_and_bad_text_shape():
    net = net_for(3).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        out = net(x, torch.randn(5, 24))
    assert out[0].shape[:2] == (2, 5)
    with pytest.raises(ValueError, match="text must be"):
        net(x, torch.randn(2, 5, 23))


def test_late_fusion_fuses_only_the_last_stage_and_multiclass_heads():
    net = net_for(4, fusion_stages=(-1,), outputs_per_prompt=3)
    assert list(net.adapters) == ["2"] and net.fusion_stages == (2,)
    out = net(torch.randn(2, 1, 16, 16, 16), torch.randn(2, 2, 24))
    assert out[0].shape[:2] == (2, 6)


def test_config_round_trip_and_checks():
    cfg = TextNetworkConfig(text_dim=384, fusion_stages=(0, -1))
    assert TextNetworkConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.resolved_fusion_stages(4) == (0, 3)
    with pytest.raises(ValueError):
        TextNetworkConfig(text_dim=8, fusion_stages=(7,)).resolved_fusion_stages(3)
    with pytest.raises(ValueError, match="unknown"):
        TextNetworkConfig.from_dict({"text_dim": 8, "bogus": 1})


@pytest.mark.parametrize("grid", [(2, 2, 2), (3, 5, 4), (12, 12, 12)])
def test_positional_encoding_for_any_grid(grid):
    pe = sinusoidal_positions_3d(grid, 48)
    assert pe.shape == (int(np.prod(grid)), 48)
    # distinct positions get distinct codes
    assert torch.unique(pe, dim=0).shape[0] == int(np.prod(grid))


def test_weights_load_with_and_without_deep_supervision():
    a, b = net_for(4, ds=True), net_for(4, ds=False)
    b.load_state_dict(a.state_dict())


@pytest.mark.parametrize("nonlin_first", [False, True])
def test_nonlin_first_reaches_encoder_and_decoder_blocks(nonlin_first):
    """Plain-conv plans may ask for conv -> nonlin -> norm; as in dynamic-network-architectures'
    PlainConvUNet, the decoder's conv blocks must follow the encoder's order."""
    kw = arch(3)
    del kw["n_blocks_per_stage"]
    kw.update(n_conv_per_stage=[1, 1, 1], nonlin_first=nonlin_first)
    net = build_text_network(kw, REQ, 1, TextNetworkConfig(text_dim=24, **SMALL))
    for part in (net.encoder, net.decoder):
        blocks = [m for m in part.modules() if type(m).__name__ == "ConvDropoutNormReLU"]
        assert blocks
        for b in blocks:
            names = [type(m).__name__ for m in b.all_modules]
            assert names.index("LeakyReLU") < names.index("InstanceNorm3d") if nonlin_first \
                else names.index("InstanceNorm3d") < names.index("LeakyReLU")


@pytest.mark.parametrize("n_stages,light", [(4, 1), (4, 2), (5, 2), (5, 3)])
def test_light_stages_keep_the_outputs_and_run_the_top_stages_once_per_image(n_stages, light):
    """Issue #14: the top ``light`` stages' convolutions see B rows whatever the number of prompts, and
    each prompt reaches them only through ``light_channels`` channels."""
    strides = [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1)
    net = net_for(n_stages, strides=strides, light_stages=light, light_channels=4)
    n_dec = n_stages - 1
    assert net.decoder.light_stages == tuple(range(n_dec - light, n_dec)) and len(net.decoder.stages) == n_dec - light
    rows = {}
    for i, stage in enumerate(net.decoder.shared_stages):
        stage.register_forward_hook(lambda m, a, o, i=i: rows.__setitem__(("shared", i), a[0].shape[0]))
    for i, mix in enumerate(net.decoder.light_mix):
        mix.register_forward_hook(lambda m, a, o, i=i: rows.__setitem__(("light", i), tuple(a[0].shape[:2])))
    size = max(16, 2 ** n_stages)
    x, patch = torch.randn(2, 1, size, size, size), np.array([size] * 3)
    out = net(x, torch.randn(2, 3, 24))
    assert len(out) == n_dec
    for o, scale in zip(out, ds_scales(strides)):
        assert tuple(o.shape) == (2, 3, *(patch * np.array(scale)).astype(int))
    assert all(rows[("shared", i)] == 2 for i in range(n_dec))
    assert all(rows[("light", i)] == (6, 8) for i in range(light))
    sum(o.float().pow(2).mean() for o in out).backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert sorted(map(int, net.adapters)) == list(range(n_dec))


def test_light_network_rebuilds_from_its_stored_config():
    net = net_for(4, light_stages=2)
    # one builder from the config the checkpoint stores: same weights load into the rebuilt network
    rebuilt = build_text_network(arch(4), REQ, 1, TextNetworkConfig.from_dict(net.config.to_dict()))
    rebuilt.load_state_dict(net.state_dict())


def test_light_stage_config_checks():
    with pytest.raises(ValueError, match="at least one"):
        net_for(4, light_stages=3)
    with pytest.raises(ValueError, match="light stage"):
        net_for(4, light_stages=2, fusion_stages=(0, -1))
    with pytest.raises(ValueError, match="final_output"):
        net_for(4, light_stages=1, final_output="dot")
    assert TextNetworkConfig(text_dim=8, light_stages=2).resolved_fusion_stages(4) == (0, 1)


@pytest.mark.parametrize("n_stages", [3, 4, 5])
def test_shared_decoder_runs_every_stage_once_per_image_and_reads_each_prompt_out(n_stages):
    """Issue #25: with a shared decoder no convolution sees more rows than images, whatever the number of
    prompts; each prompt gets deep-supervised logits at every stage from its own read-out."""
    strides = [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1)
    net = net_for(n_stages, strides=strides, shared_decoder=True)
    n_dec = n_stages - 1
    rows = []
    for m in net.decoder.modules():
        if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
            m.register_forward_hook(lambda m, a, o: rows.append(a[0].shape[0]))
    size = max(16, 2 ** n_stages)
    x, patch = torch.randn(2, 1, size, size, size), np.array([size] * 3)
    out = net(x, torch.randn(2, 5, 24))
    assert len(out) == n_dec and rows and set(rows) == {2}
    for o, scale in zip(out, ds_scales(strides)):
        assert tuple(o.shape) == (2, 5, *(patch * np.array(scale)).astype(int))
    sum(o.float().pow(2).mean() for o in out).backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert sorted(map(int, net.adapters)) == list(range(n_dec)) and len(net.decoder.seg_layers) == 0
    net.decoder.deep_supervision = False
    with torch.no_grad():
        torch.testing.assert_close(net(x, torch.ones(2, 2, 24))[:, 0], net(x, torch.ones(2, 2, 24))[:, 1])
    # one builder from the stored config: the same weights load into the rebuilt network
    rebuilt = build_text_network(arch(n_stages, strides), REQ, 1, TextNetworkConfig.from_dict(net.config.to_dict()),
                                 deep_supervision=False)
    rebuilt.load_state_dict(net.state_dict())


def test_shared_decoder_config_checks():
    for bad in ({"light_stages": 1}, {"fusion_stages": (0,)}, {"final_output": "dot"}):
        with pytest.raises(ValueError, match="shared_decoder"):
            net_for(4, shared_decoder=True, **bad)


def refiner_input(b: int = 2, size: int = 16) -> tuple:
    """Image + two non-overlapping binary shape channels, and the label map they hold."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 3, size, size, size, generator=g)
    labels = torch.randint(0, 3, (b, size, size, size), generator=g)
    x[:, 1], x[:, 2] = (labels == 1).float(), (labels == 2).float()
    return x, labels


def test_refiner_returns_its_input_shape_exactly_at_initialisation():
    """Issue #13: do no harm by construction; the correction heads start at zero."""
    net = net_for(4, in_ch=3, outputs_per_prompt=3, shape_prior_channels=(1, 2), shape_prior_logit=4.0)
    x, labels = refiner_input()
    out = net(x, torch.randn(2, 1, 24))
    assert torch.equal(out[0].argmax(1), labels)
    assert all(torch.isfinite(o).all() for o in out) and out[1].shape[2:] == (8, 8, 8)
    with pytest.raises(ValueError, match="decodes with its input"):
        net.decode(net.encode(x), torch.randn(2, 1, 24))
    # the correction learns: a few steps towards another label map move the output towards it
    target, text = (labels + 1) % 3, torch.randn(2, 1, 24)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(15):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x, text)[0], target).backward()
        opt.step()
    with torch.no_grad():
        # from 0 (the prior reproduces the input, and every target class differs from it) to 0.61 in these 15
        # steps (seeded); 0.5 leaves that margin and is well above chance (1/3 for three classes)
        assert (net(x, text)[0].argmax(1) == target).float().mean() > 0.5
    # without the prior (the old design), an untrained network does not reproduce its input
    plain = net_for(4, in_ch=3, outputs_per_prompt=3)
    with torch.no_grad():
        assert not torch.equal(plain(x, torch.randn(2, 1, 24))[0].argmax(1), labels)


def test_refiner_prior_checks_its_channels():
    with pytest.raises(ValueError, match="foreground classes"):
        net_for(3, in_ch=3, outputs_per_prompt=3, shape_prior_channels=(1,))
    cfg = TextNetworkConfig(text_dim=8, outputs_per_prompt=3, shape_prior_channels=(1, -1))
    assert TextNetworkConfig.from_dict(cfg.to_dict()) == cfg


def test_refiner_direction_channels_follow_the_dataset_channels():
    """Issue #26: a refiner with direction channels takes 2 (K-1) input channels after the dataset's (grow and
    shrink per class); the shape prior still reads the dataset's shape channels, so an untrained refiner
    still returns its input whatever the directions say. A config saved before the option existed builds
    the old input width."""
    net = net_for(4, in_ch=3, outputs_per_prompt=3, shape_prior_channels=(1, 2), direction_channels=True)
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv3d))
    assert first.in_channels == 3 + 4
    x, labels = refiner_input()
    torch.nn.init.normal_(net.decoder.seg_layers[-1].weight)  # a trained correction: the planes change logits
    for planes in (torch.zeros(2, 4), torch.tensor([[1.0, 0, 0, 1], [0, 1, 1, 0]])):
        xd = torch.cat([x, planes[..., None, None, None].expand(2, 4, *x.shape[2:])], 1)
        text = torch.randn(2, 1, 24)
        # prediction appends the planes per tile (encode); training appends them to the batch: same logits
        with torch.no_grad():
            torch.testing.assert_close(net.decode(net.encode(x, planes), text, x)[0], net(xd, text)[0])
    with torch.no_grad():
        a, b = (net.decode(net.encode(x, p), text, x)[0] for p in (torch.zeros(1, 4), torch.ones(1, 4)))
    assert not torch.equal(a, b)
    net.zero_output_heads()
    for planes in (torch.zeros(2, 4), torch.tensor([[1.0, 0, 0, 1], [0, 1, 1, 0]])):
        xd = torch.cat([x, planes[..., None, None, None].expand(2, 4, *x.shape[2:])], 1)
        assert torch.equal(net(xd, torch.randn(2, 1, 24))[0].argmax(1), labels)
    old = {k: v for k, v in net.config.to_dict().items() if k != "direction_channels"}
    assert TextNetworkConfig.from_dict(old).extra_input_channels() == 0
    with pytest.raises(ValueError, match="refiners"):
        TextNetworkConfig(text_dim=8, direction_channels=True).extra_input_channels()

"""Unit tests of notebooks/07_rethinking/rethinking.py: budgets, filter selection, slimming, surgery, tickets."""

import copy

import pytest
import rethinking as R
import torch
from prunebook import data, models, prune
from torch import nn

X3 = torch.zeros(1, 3, 32, 32)


# ---------------------------------------------------------------- budgets


def test_scratch_b_epochs_arithmetic():
    assert R.scratch_b_epochs(160, 2.0, 1.0) == 320
    assert R.scratch_b_epochs(160, 1.0, 1.0) == 160
    assert R.scratch_b_epochs(24, 3.0, 2.0) == 36
    assert R.scratch_b_epochs(10, 1.9, 1.0) == 19  # rounded down, as the official scripts do
    assert R.scratch_b_epochs(90, 5.0, 1.0, cap=2) == 180  # the paper's ImageNet rule
    assert R.scratch_b_epochs(90, 1.5, 1.0, cap=2) == 135
    with pytest.raises(ValueError):
        R.scratch_b_epochs(10, 1.0, 0.0)


@pytest.mark.parametrize("depth,variant,epochs", [(56, "A", 178), (56, "B", 220), (110, "A", 190), (110, "B", 260)])
def test_scratch_b_epochs_of_li_et_al_resnets(depth, variant, epochs):
    # Renda et al. (2020) quote the paper's Scratch-B runs of these models as 160 x 1.1156 / 1.3791 / 1.1883 / 1.6273
    big = R.resnet_arch(depth)
    small = R.resnet_arch(depth, mids=R.resnet_l1_widths(depth, variant))
    assert R.scratch_b_epochs(160, R.macs(big, X3), R.macs(small, X3)) == epochs


def test_sparse_macs_counts_only_nonzero_conv_weights():
    torch.manual_seed(0)
    net = models.vgg_cifar(11, 10, 3, width=0.125)
    x = torch.zeros(1, 3, 32, 32)
    assert R.sparse_macs(net, x) == prune.count_macs(net, x) == R.macs(R.vgg_arch(11, models.vgg_widths(11, 0.125)), x)
    conv = net.features[0]
    with torch.no_grad():
        conv.weight[:, :, 0, 0] = 0  # a ninth of the first conv's weights
    assert R.sparse_macs(net, x) == prune.count_macs(net, x) - conv.out_channels * conv.in_channels * 32 * 32


# ---------------------------------------------------------------- L1-norm filter pruning


def test_li_et_al_plans():
    assert R.resnet_l1_widths(56, "B")[:10] == [6, 6, 6, 6, 6, 6, 6, 16, 16, 32]
    assert R.resnet_l1_widths(110, "A")[17:19] == [16, 32]
    assert R.resnet_l1_widths(20, "B", 4, fractions=(0.9, 0.9, 0.9)) == [1, 1, 4, 8, 1, 1, 16, 1, 16]
    assert R.vgg_l1_widths(16, models.vgg_widths(16)) == [32, 64, 128, 128, 256, 256, 256] + [256] * 6
    vgg = prune.count_parameters(R.build(R.vgg_arch(16, R.vgg_l1_widths(16, models.vgg_widths(16)), "mlp")))
    assert round(vgg / 1e6, 1) == 5.4  # Li et al.'s VGG-16-A: 5.4 M parameters


@pytest.mark.parametrize("family", ["resnet", "vgg"])
def test_structural_pruning_equals_masking(family, randomize_bn):
    torch.manual_seed(1)
    if family == "resnet":
        arch = R.resnet_arch(20, 8)
        target = {**arch, "mids": R.resnet_l1_widths(20, "B", 8)}
    else:
        arch = R.vgg_arch(11, models.vgg_widths(11, 0.25), "mlp")
        target = {**arch, "widths": R.vgg_l1_widths(11, arch["widths"])}
    model = randomize_bn(R.build(arch))
    model.classifier.eval() if family == "vgg" else None
    keep = list(R.filters_to_keep(model, arch, target).values())
    masked = copy.deepcopy(model)
    prune.mask_channels(masked, dict(zip(R.prunable_convs(masked, arch), keep)))
    shrunk = R.l1_prune(copy.deepcopy(model), arch, target, X3)
    assert R.arch_of(shrunk, arch) == target
    assert prune.count_parameters(shrunk) == prune.count_parameters(R.build(target))
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(shrunk(x), masked(x), atol=1e-5)
        assert not torch.allclose(shrunk(x), model(x), atol=1e-3)


def test_pruning_does_not_touch_bn_statistics_of_a_training_model():
    model = R.build(R.resnet_arch(20, 8)).train()
    before = model.blocks[4].bn2.running_mean.clone()
    target = R.resnet_arch(20, 8, R.resnet_l1_widths(20, "B", 8))
    R.l1_prune(model, R.resnet_arch(20, 8), target, torch.randn(1, 3, 32, 32))
    assert model.training and torch.equal(model.blocks[4].bn2.running_mean, before)


# ---------------------------------------------------------------- network slimming


def test_slim_prune_shrinks_and_matches_the_masked_model(randomize_bn):
    torch.manual_seed(3)
    model = randomize_bn(models.vgg_cifar(11, 10, 3, width=0.25))
    keep = prune.slimming_keep(model, 0.6)
    masked = copy.deepcopy(model)
    prune.mask_channels(masked, {c2: keep[c] for (c, _), (c2, _) in zip(prune.conv_bn_pairs(model),
                                                                        prune.conv_bn_pairs(masked))})
    R.slim_prune(model, 0.6, X3)
    assert prune.conv_widths(model) == [len(v) for v in keep.values()]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), masked(x), atol=1e-5)


def test_uniform_and_guided_architectures_hit_the_flop_target():
    base = models.vgg_widths(11, 0.25)
    target = 0.4 * R.macs(R.vgg_arch(11, base), X3)
    uni = R.vgg_for_macs(11, base, target, X3)
    assert abs(R.macs(uni, X3) / target - 1) < 0.05
    assert len(set(round(w / b, 1) for w, b in zip(uni["widths"], base))) == 1  # every layer thinned alike
    guided = R.vgg_for_macs(11, base, target, X3, stage_fractions=[1.0, 0.8, 0.6, 0.3, 0.2])
    assert abs(R.macs(guided, X3) / target - 1) < 0.05
    w = guided["widths"]
    assert w[0] / base[0] > w[-1] / base[-1]
    assert R.stage_keep_fractions(R.vgg_arch(11, base), R.vgg_arch(11, base)) == [1.0] * 5


def test_uniform_and_guided_architectures_hit_the_parameter_target():
    base = models.vgg_widths(11, 0.25)
    full = R.params(R.vgg_arch(11, base))
    assert full == prune.count_parameters(R.build(R.vgg_arch(11, base)))
    target = 0.3 * full
    uni = R.vgg_for_params(11, base, target, X3)
    guided = R.vgg_for_params(11, base, target, X3, stage_fractions=[1.0, 0.8, 0.6, 0.3, 0.2])
    for a in (uni, guided):
        assert abs(R.params(a) / target - 1) < 0.05
    # at equal parameters, keeping the early (cheap in parameters, costly in FLOPs) stages wide costs more FLOPs
    assert R.macs(guided, X3) > R.macs(uni, X3)
    with pytest.raises(ValueError):
        R.vgg_matched(11, base, target, X3, by="latency")


def test_latency_side_by_side_pairs_rounds_and_leaves_no_graph():
    small = R.build(R.vgg_arch(11, models.vgg_widths(11, 0.125)))
    large = R.build(R.vgg_arch(11, models.vgg_widths(11, 0.5)))
    out = R.latency_side_by_side({"small": small, "large": large}, X3.repeat(4, 1, 1, 1), rounds=3, repeats=2,
                                 warmup=1)
    assert set(out) == {"small", "large"} and all(len(v) == 3 and min(v) > 0 for v in out.values())
    assert not small.training and not large.training


# ---------------------------------------------------------------- unstructured pruning and tickets


def test_magnitude_masks_prune_convs_globally_and_leave_the_model_alone():
    torch.manual_seed(4)
    model = models.vgg_cifar(11, 10, 3, width=0.125)
    masks = R.magnitude_masks(model, 0.8)
    assert not hasattr(model.features[0], "weight_mask")
    total = sum(m.numel() for m in masks.values())
    assert sum(int((m == 0).sum()) for m in masks.values()) == round(0.8 * total)
    assert set(masks) == {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    kept = torch.cat([model.get_submodule(k[:-7]).weight.abs().flatten()[m.flatten() == 1] for k, m in masks.items()])
    cut = torch.cat([model.get_submodule(k[:-7]).weight.abs().flatten()[m.flatten() == 0] for k, m in masks.items()])
    assert kept.min() >= cut.max()


def test_winning_ticket_restores_the_initial_weights_of_kept_parameters_exactly():
    arch = R.vgg_arch(11, models.vgg_widths(11, 0.125))
    torch.manual_seed(7)
    model = R.build(arch)
    init = prune.snapshot(model)
    with torch.no_grad():  # "training"
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    masks = R.magnitude_masks(model, 0.7)
    torch.manual_seed(7)  # what train_run does before building the ticket
    ticket = R.apply_masks(R.build(arch), masks)
    for key, mask in masks.items():
        assert torch.equal(ticket.get_submodule(key[:-7]).weight, init[key] * mask)
    # the shared rewind gives the same ticket
    R.apply_masks(model, masks)
    prune.rewind(model, init)
    for key in masks:
        assert torch.equal(model.get_submodule(key[:-7]).weight, ticket.get_submodule(key[:-7]).weight)


def test_sparse_he_init_keeps_zeros_and_rescales_by_the_surviving_fan():
    torch.manual_seed(5)
    model = R.build(R.vgg_arch(11, [64] * 8))
    masks = R.random_masks_like(model, [0.9] * 8, seed=0)
    assert all(abs(s - 0.9) < 1e-3 for s in R.layer_sparsities(masks).values())
    R.apply_masks(model, masks)
    R.sparse_he_init_(model)
    conv = model.features[4]  # 64 -> 64
    kept = conv.weight[conv.weight_mask.bool()]
    n = conv.weight_mask.sum().item() / conv.in_channels
    assert torch.all(conv.weight[~conv.weight_mask.bool()] == 0)
    assert abs(kept.std().item() / (2 / n) ** 0.5 - 1) < 0.1


# ---------------------------------------------------------------- runs and statistics


def test_summaries_and_the_noninferiority_margin():
    assert R.summarize([0.9]) == (0.9, 0.0)
    assert R.fmt([0.9, 0.8]) == "85.00 ± 7.07"
    # the margin is the paper's largest run-to-run std in Table 1 (ResNet-110-B, Scratch-E), as a fraction
    assert R.NONINFERIORITY_MARGIN == pytest.approx(0.0043)
    assert not hasattr(R, "within_spread")  # claims are decided by prunebook.claims only


def test_train_run_is_cached_and_deterministic(tmp_cache):
    g = torch.Generator().manual_seed(0)
    ds = data.ImageSet(torch.rand(64, 1, 16, 16, generator=g), torch.arange(64) % 4, tuple("abcd"), "toy")
    dset = R.Data(ds, ds, {"toy": 1})
    arch = R.vgg_arch(11, [2] * 8, in_channels=1, num_classes=4)
    recipe = R.Recipe(epochs=2, batch_size=16, crop_padding=0, flip=False)
    a = R.scratch(arch, dset, recipe, 3, progress_bar=False)
    b = R.scratch(arch, dset, recipe, 3, progress_bar=False)
    assert a["acc"] == b["acc"] and a["epochs"] == 2 and len(a["history"]) == 2
    assert any(tmp_cache.rglob("*.pt"))
    import shutil

    shutil.rmtree(tmp_cache)
    c = R.scratch(arch, dset, recipe, 3, progress_bar=False)
    assert all(torch.equal(c["state"][k], a["state"][k]) for k in a["state"])

"""Unit tests of notebooks/06_unetpp/unetpp.py: the node grid, pruning, the loss, metrics, data and parameter counts."""

import numpy as np
import pytest
import torch
import unetpp as U
from prunebook.prune import count_parameters

X = torch.randn(2, 1, 32, 32)


# ---------------------------------------------------------------- the node grid


@pytest.mark.parametrize("arch,nodes,heads", [
    ("U-Net", 9, 1), ("U-Net^1", 3, 1), ("U-Net^2", 5, 1), ("U-Net^3", 7, 1), ("U-Net^4", 9, 1),
    ("wide U-Net", 9, 1), ("UNet+", 15, 1), ("UNet++", 15, 1), ("UNet++ DS", 15, 4), ("UNet+ DS", 15, 4),
])
def test_node_and_head_counts(arch, nodes, heads):
    m = U.build(arch, filters=(2, 4, 8, 16, 32))
    assert len(m.blocks) == nodes and len(m.heads) == heads
    out = m(X)
    assert len(out) == heads and all(o.shape == (2, 1, 32, 32) for o in out)


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_forward_at_level_computes_exactly_the_nodes_with_i_plus_j_at_most_level(level):
    m = U.build("UNet++ DS", filters=(2, 4, 8, 16, 32))
    called = []
    for name, block in m.blocks.items():
        block.register_forward_hook(lambda mod, inp, out, name=name: called.append(name))
    out = m(X, level)
    expected = {f"{i}{j}" for i in range(5) for j in range(5) if i + j <= level}
    assert sorted(called) == sorted(expected)  # each once, none other
    assert len(called) == {1: 3, 2: 6, 3: 10, 4: 15}[level]
    assert len(out) == level and all(o.shape == (2, 1, 32, 32) for o in out)


def test_pruned_network_gives_the_same_heads_as_the_full_one():
    m = U.build("UNet++ DS", filters=(2, 4, 8, 16, 32)).eval()
    full = m(X)
    for level in (1, 2, 3):
        assert torch.allclose(m(X, level)[-1], full[level - 1], atol=1e-6)


def test_pruned_parameters_are_the_ones_the_pruned_forward_uses():
    m = U.build("UNet++ DS", filters=(2, 4, 8, 16, 32), bn=False, up="transpose")
    for level in (1, 2, 3, 4):
        m.zero_grad(set_to_none=True)
        m(X, level)[-1].sum().backward()
        used = sum(p.numel() for p in m.parameters() if p.grad is not None)
        assert m.pruned_parameters(level) == used


def test_skip_inputs_dense_plus_and_unet():
    assert U.build("UNet++").skips(0, 3) == [(0, 0), (0, 1), (0, 2)]
    assert U.build("UNet+").skips(0, 3) == [(0, 2)]
    assert U.build("U-Net").skips(0, 4) == [(0, 0)]
    assert U.build("U-Net^2").nodes == [(0, 0), (1, 0), (2, 0), (1, 1), (0, 2)]


def test_forward_rejects_a_level_without_a_head():
    with pytest.raises(ValueError):
        U.build("UNet++", filters=(2, 4, 8, 16, 32))(X, 2)
    with pytest.raises(ValueError):
        U.NestedUNet((2, 4, 8, 16, 32), kind="unet", deep_supervision=True)


# ---------------------------------------------------------------- parameter counts (the official Keras layers)


def test_parameter_counts_match_the_official_keras_code_exactly():
    kw = dict(filters=U.PAPER_FILTERS, bn=False, up="transpose")
    assert count_parameters(U.build("U-Net", **kw)) == 7_759_521
    assert count_parameters(U.build("UNet++", **kw)) == 9_041_601
    assert count_parameters(U.build("UNet++ DS", **kw)) == 9_041_601 + 3 * 33  # three more 1×1 heads
    wide = U.build("wide U-Net", wide_filters=U.PAPER_WIDE_FILTERS, bn=False, up="transpose")
    assert count_parameters(wide) == 9_282_246


def test_pruned_parameter_counts_match_the_paper_figure():
    m = U.build("UNet++ DS", filters=U.PAPER_FILTERS, bn=False, up="transpose")
    counts = [m.pruned_parameters(level) for level in (1, 2, 3, 4)]
    assert [round(c / 1e6, 1) for c in counts] == [0.1, 0.5, 2.2, 9.0]  # DLMIA Fig. 3
    assert counts[-1] == 9_041_601


def test_wide_filters_come_close_to_unetpp_size():
    wide = U.wide_filters_for((8, 16, 32, 64, 128))
    target = count_parameters(U.build("UNet++"))
    assert abs(count_parameters(U.build("wide U-Net", wide_filters=wide)) - target) / target < 0.02
    assert all(w >= f for w, f in zip(wide, (8, 16, 32, 64, 128)))


# ---------------------------------------------------------------- loss and metrics


def test_loss_on_perfect_and_empty_predictions():
    y = torch.zeros(1, 1, 4, 4)
    y[..., :2, :2] = 1  # 4 foreground pixels of 16
    perfect = (2 * y - 1) * 50.0
    assert U.bce_dice_loss(perfect, y).item() == pytest.approx(-1.0, abs=1e-6)
    empty = torch.full_like(y, -50.0)  # predicts nothing: Dice = smooth / (|Y| + smooth) = 1/5
    bce = 0.5 * (4 / 16) * 50.0  # ½ · mean BCE; log(1 + e^50) ≈ 50 on the 4 missed pixels
    assert U.bce_dice_loss(empty, y).item() == pytest.approx(bce - 1 / 5, rel=1e-5)
    assert U.bce_dice_loss(empty, torch.zeros_like(y)).item() == pytest.approx(-1.0, abs=1e-6)
    heads = [perfect, empty]
    assert U.deep_supervision_loss(heads, y).item() == pytest.approx((-1.0 + bce - 0.2) / 2, rel=1e-5)


def test_iou_and_dice_on_hand_made_masks():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :3] = True  # 3 pixels
    b[0, 1:] = True  # 3 pixels, 2 shared
    iou, dice = U.iou_dice(a, b)
    assert iou == pytest.approx(2 / 4) and dice == pytest.approx(4 / 6)
    assert U.iou_dice(a, a) == (1.0, 1.0)
    assert U.iou_dice(a, ~a) == (0.0, 0.0)
    assert U.iou_dice(np.zeros(3), np.zeros(3)) == (1.0, 1.0)


# ---------------------------------------------------------------- data


def test_synthetic_generator_size_distribution_and_outline_only():
    d = U.outline_shapes(400, size=96, seed=3)
    assert d["images"].shape == d["masks"].shape == (400, 1, 96, 96)
    r = d["radius"]
    assert r.min() >= 3 and r.max() <= 30
    # log-uniform on [3, 30]: P(r < 8) = ln(8/3)/ln 10 = 0.426, P(8 ≤ r < 16) = 0.301, P(r ≥ 16) = 0.273
    bins = U.size_bin(r)
    for name, p in zip(U.SIZE_BINS, (0.426, 0.301, 0.273)):
        assert abs((bins == name).mean() - p) < 0.07
    # every image has at least one object, and larger radii give larger objects
    area = d["masks"].sum(axis=(1, 2, 3))
    assert (area > 0).all()
    big, small = area[r > 20], area[r < 5]
    assert big.min() > small.max()
    # the inside of an object looks like the background: only the outline is bright
    img, msk = d["images"][:, 0], d["masks"][:, 0].astype(bool)
    deep_inside = ~np.stack([U.binary_dilate(~m, 3) for m in msk])  # more than 3 px inside an object
    outside = ~np.stack([U.binary_dilate(m, 3) for m in msk])  # more than 3 px outside every object
    assert deep_inside.sum() > 10_000
    assert abs(img[deep_inside].mean() - img[outside].mean()) < 0.02
    assert abs(img[deep_inside].std() - img[outside].std()) < 0.02


def test_synthetic_generator_is_seeded():
    a, b = U.outline_shapes(5, seed=1), U.outline_shapes(5, seed=1)
    assert np.array_equal(a["images"], b["images"])
    assert not np.array_equal(a["images"], U.outline_shapes(5, seed=2)["images"])


def test_nuclei_loader_shapes_and_foreground_fraction():
    ims = U.nuclei_images()
    assert [im["name"] for im in ims] == ["stardist DSB2018", "cellunet nuc0", "cellunet nuc1"]
    sd = ims[0]
    assert sd["image"].shape == sd["mask"].shape == (512, 512) and sd["image"].dtype == np.float32
    assert len(np.unique(sd["instances"])) - 1 == 125
    assert sd["mask"].mean() == pytest.approx(0.1992, abs=1e-4)
    for im, frac in zip(ims[1:], (0.1179, 0.0652)):
        assert im["image"].shape == im["mask"].shape == (1080, 1280)
        assert im["mask"].mean() == pytest.approx(frac, abs=1e-4)


def test_spatial_split_partitions_the_columns():
    ims = [{"name": "a", "image": np.zeros((8, 512), np.float32), "mask": np.zeros((8, 512), bool)}]
    sp = U.spatial_split(ims)  # fold 3, seed 0's
    widths = [sp[k][0]["image"].shape[1] for k in ("train", "val", "test")]
    assert widths == [320, 64, 128] and sum(widths) == 512
    covered = []
    for fold in range(4):
        spans = U.fold_spans(fold)
        cols = sorted(c for split in spans.values() for a, b in split for c in range(round(8 * a), round(8 * b)))
        assert cols == list(range(8))  # every block once per fold
        assert sum(b - a for a, b in spans["test"]) == 0.25 and sum(b - a for a, b in spans["train"]) == 0.625
        covered += [c for a, b in spans["test"] for c in range(round(8 * a), round(8 * b))]
        sp = U.spatial_split(ims, fold)
        assert sum(r["image"].shape[1] for rs in sp.values() for r in rs) == 512
    assert sorted(covered) == list(range(8))  # the four folds test every column once
    assert [U.fold_of(s) for s in range(5)] == [3, 2, 1, 0, 3]


def test_patches_and_whole_region_prediction_shapes():
    ims = [{"name": "a", "image": np.random.rand(70, 90).astype(np.float32), "mask": np.zeros((70, 90), bool)}]
    x, y = U.sample_patches(ims, 5, 32, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 1, 32, 32)
    pieces = U.spatial_split([{**ims[0], "image": np.random.rand(40, 512).astype(np.float32),
                               "mask": np.zeros((40, 512), bool)}], fold=1)["train"]
    assert len(pieces) == 2  # two pieces of one image, sampled as one image
    x, y = U.sample_patches(pieces, 6, 32, torch.Generator().manual_seed(0))
    assert x.shape == (6, 1, 32, 32)
    m = U.build("UNet++ DS", filters=(2, 4, 8, 16, 32))
    p = U.predict_region(m, ims[0]["image"], level=3, tile=32)
    assert p.shape == (3, 70, 90) and (p >= 0).all() and (p <= 1).all()


# ---------------------------------------------------------------- the head prior, the cache key, latency rounds


def test_head_prior_starts_every_head_at_the_foreground_log_odds():
    m = U.build("UNet++ DS", filters=(2, 4, 8, 16, 32))
    m.set_head_prior(0.1)
    for head in m.heads.values():
        assert torch.allclose(head.bias, torch.full_like(head.bias, float(np.log(0.1 / 0.9))))
    # the weights start small, so every pixel starts near the prior, on the background side of the 0.5 threshold
    for head in m.heads.values():
        assert float(head.weight.abs().max()) < 0.05
    p = torch.sigmoid(m.eval()(X)[-1])
    assert float(p.max()) < 0.2 and float(p.min()) > 0.05


def test_a_head_with_all_negative_weights_on_relu_features_cannot_call_foreground():
    """The trap that set_head_prior's small weights avoid: x^{0,j} ≥ 0 after its ReLU, so with every weight < 0
    the logit is at most the (negative) prior bias at every pixel."""
    m = U.build("UNet++ DS", filters=(2, 4, 8, 16, 32))
    m.set_head_prior(0.1)
    m.heads["4"].weight.data = -m.heads["4"].weight.data.abs() - 0.3
    logits = m.eval()(torch.randn(2, 1, 32, 32) * 5)[-1]
    assert float(logits.max()) <= float(np.log(0.1 / 0.9)) + 1e-6


def test_foreground_fraction_pools_pixels():
    masks = [np.ones((2, 2), bool), np.zeros((2, 6), bool)]
    assert U.foreground_fraction(masks) == pytest.approx(4 / 16)
    assert U.foreground_fraction(np.array([[0.0, 1.0]])) == pytest.approx(0.5)


def test_run_key_carries_the_prior_rounded():
    key = U.run_key("UNet++", {}, U.Recipe(), {"data": "x"}, 0, prior=0.123456789)
    assert key["head_prior"] == pytest.approx(0.123457)  # the series' code is in the cache key (prunebook.cache)


def test_latency_rounds_shape_and_positive():
    m = U.build("UNet++ DS", filters=(2, 4, 8, 16, 32))
    t = U.latency_rounds(m, (1, 4), batch=1, size=32, rounds=2, repeats=1, warmup=0)
    assert t.shape == (2, 2) and (t > 0).all()

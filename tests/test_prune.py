import pytest
import torch
from prunebook import models, prune, train
from torch import nn


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))


@pytest.mark.parametrize("s", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_global_magnitude_zeroes_exactly_that_fraction(s):
    net = _net()
    prune.global_magnitude(net, s)
    assert prune.sparsity(net) == round(s * 300) / 300


def test_global_magnitude_removes_the_smallest_weights_over_all_layers():
    net = _net()
    all_w = torch.cat([net[0].weight.flatten(), net[2].weight.flatten()]).abs()
    threshold = all_w.sort().values[149]
    prune.global_magnitude(net, 0.5)
    for layer in (net[0], net[2]):
        kept = layer.weight != 0
        assert torch.all(layer.weight_orig.abs()[kept] > threshold)
        assert torch.all(layer.weight_orig.abs()[~kept] <= threshold)


def test_pruning_again_reaches_the_new_total():
    net = _net()
    prune.global_magnitude(net, 0.5)
    prune.global_magnitude(net, 0.8)
    assert prune.sparsity(net) == 240 / 300
    prune.global_magnitude(net, 0.3)  # never un-prunes
    assert prune.sparsity(net) == 240 / 300


def test_layerwise_magnitude_is_exact_in_every_layer():
    net = _net()
    prune.layerwise_magnitude(net, 0.25)
    assert prune.layer_sparsity(net) == {"0": 0.25, "2": 0.25}


def test_random_prune_is_exact_and_seeded():
    a, b, c = _net(), _net(), _net()
    prune.random_prune(a, 0.3, seed=1)
    prune.random_prune(b, 0.3, seed=1)
    prune.random_prune(c, 0.3, seed=2)
    assert prune.layer_sparsity(a) == {"0": 0.3, "2": 0.3}
    assert torch.equal(a[0].weight_mask, b[0].weight_mask)
    assert not torch.equal(a[0].weight_mask, c[0].weight_mask)
    g = _net()
    prune.random_prune(g, 0.3, seed=1, layerwise=False)
    assert prune.sparsity(g) == 90 / 300


def test_counts_and_permanence():
    net = _net()
    total = 10 * 20 + 20 + 20 * 5 + 5
    assert prune.count_parameters(net) == total == prune.count_parameters(net)
    prune.global_magnitude(net, 0.5)
    assert prune.count_parameters(net) == total
    assert prune.count_nonzero(net) == total - 150
    out = net(torch.ones(1, 10))
    prune.make_permanent(net)
    assert not hasattr(net[0], "weight_mask") and prune.count_nonzero(net) == total - 150
    assert torch.equal(net(torch.ones(1, 10)), out)


def test_count_macs_of_known_layers():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert prune.count_macs(conv, torch.zeros(1, 3, 32, 32)) == 8 * 3 * 9 * 32 * 32
    assert prune.count_macs(nn.Linear(10, 4), torch.zeros(2, 10)) == 2 * 40


def test_latency_rounds_pairs_rounds_alternates_order_and_builds_no_graph():
    net, x, order = _net(), torch.zeros(4, 10), []
    calls = {k: (lambda k=k: order.append(k) or net(x)) for k in ("a", "b")}
    out = prune.latency_rounds(calls, rounds=3, repeats=2, warmup=1)
    assert set(out) == {"a", "b"} and all(len(v) == 3 and min(v) > 0 for v in out.values())
    assert order == ["a", "b"] + ["a"] * 2 + ["b"] * 2 + ["b"] * 2 + ["a"] * 2 + ["a"] * 2 + ["b"] * 2
    grads = []
    prune.latency_rounds({"a": lambda: grads.append(net(x).requires_grad)}, rounds=1, repeats=1, warmup=0)
    assert grads == [False]


def test_rewind_keeps_masks_and_restores_survivors():
    net = _net()
    init = prune.snapshot(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    prune.global_magnitude(net, 0.5)
    mask = net[0].weight_mask.clone()
    prune.rewind(net, init)
    assert torch.equal(net[0].weight, init["0.weight"] * mask)
    assert torch.equal(net[0].bias, init["0.bias"])


def test_iterative_magnitude_pruning_schedule():
    net = _net()
    init = prune.snapshot(net)
    seen = []

    def train_fn(model, r):
        seen.append(r)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.5)
        return {"acc": float(r)}

    rows = prune.iterative_magnitude_pruning(net, train_fn, rounds=3, rate=0.2, rewind_to=init)
    assert seen == [0, 1, 2, 3]
    assert [r["sparsity"] for r in rows] == [0.0, 60 / 300, 108 / 300, round(0.488 * 300) / 300]
    with pytest.raises(ValueError, match="rewind_to is required"):
        prune.iterative_magnitude_pruning(_net(), train_fn, rounds=1)


def test_iterative_pruning_with_fine_tuning_and_a_custom_prune_step():
    net = _net()
    calls = []

    def step(model, target, params):
        calls.append(round(target, 3))
        prune.global_magnitude(model, target, params)

    def train_fn(model, r):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        return {}

    prune.iterative_magnitude_pruning(net, train_fn, rounds=2, rate=0.2, rewind_to="none", prune_step=step)
    assert calls == [0.2, 0.36]
    survivors = net[0].weight[net[0].weight_mask.bool()]
    assert survivors.abs().min() > 1.0  # the trained weights went on (three rounds of +1), none was rewound


def test_apply_masks_callback_zeroes_after_each_step():
    net = _net()
    masks = {"0.weight": (torch.rand(20, 10) > 0.5).float()}
    cb = prune.ApplyMasks(net, masks)

    class S:  # the state the callback sees
        model = net

    with torch.no_grad():
        net[0].weight.add_(1)
    cb.after_step(S)
    assert torch.all(net[0].weight[masks["0.weight"] == 0] == 0)



def test_remove_channels_shrinks_and_keeps_the_outputs_of_the_kept_channels():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
    net.eval()
    x = torch.randn(2, 3, 6, 6)
    keep = prune.l1_keep(net[0], 4)
    first_out = net[:3](x)[:, keep]
    prune.remove_channels(net, x, {net[0]: keep})
    assert net[0].out_channels == 4 and net[1].num_features == 4 and net[3].in_channels == 4
    assert torch.allclose(net[:3](x), first_out, atol=1e-6)  # the same outputs on the kept channels


def test_remove_channels_on_resnet_blocks_gives_a_smaller_working_model():
    net = models.resnet_cifar(20)
    x = torch.zeros(1, 3, 32, 32)
    prune.remove_channels(net, x, {b.conv1: prune.l1_keep(b.conv1, b.conv1.out_channels // 2) for b in net.blocks})
    assert [b.conv1.out_channels for b in net.blocks] == [8] * 3 + [16] * 3 + [32] * 3
    assert net(x).shape == (1, 10)
    assert prune.count_parameters(net) < prune.count_parameters(models.resnet_cifar(20))
    with pytest.raises(ValueError):
        prune.remove_channels(net, x, {net.blocks[0].conv1: torch.tensor([], dtype=torch.long)})


def test_l1_keep_keeps_the_largest_norm_filters():
    conv = nn.Conv2d(2, 5, 3, bias=False)
    norms = [3.0, 0.5, 7.0, 0.5, 2.0]
    with torch.no_grad():
        for j, s in enumerate(norms):
            conv.weight[j] = s / 18 * torch.where(torch.arange(18) % 2 == 0, 1.0, -1.0).view(2, 3, 3)
    assert torch.allclose(prune.filter_l1_norms(conv), torch.tensor(norms))
    assert prune.l1_keep(conv, 3).tolist() == [0, 2, 4]
    assert prune.l1_keep(conv, 4).tolist() == [0, 1, 2, 4]  # a tie goes to the lower index
    removed = set(range(5)) - set(prune.l1_keep(conv, 2).tolist())
    assert max(norms[j] for j in removed) <= min(norms[j] for j in prune.l1_keep(conv, 2).tolist())
    with pytest.raises(ValueError):
        prune.l1_keep(conv, 0)


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.7, 0.8])
def test_slimming_threshold_removes_the_requested_fraction(ratio, randomize_bn):
    torch.manual_seed(2)
    model = randomize_bn(models.vgg_cifar(11, 10, 3, width=0.25))
    total = sum(bn.num_features for _, bn in prune.conv_bn_pairs(model))
    keep = prune.slimming_keep(model, ratio)
    assert total - sum(len(v) for v in keep.values()) == round(ratio * total)
    t = prune.slimming_threshold(model, ratio)
    for conv, bn in prune.conv_bn_pairs(model):
        kept = set(keep[conv].tolist())
        for j, g in enumerate(bn.weight.abs().tolist()):
            assert (j in kept) == (g > t)


def test_slimming_never_empties_a_layer(randomize_bn):
    torch.manual_seed(2)
    model = randomize_bn(models.vgg_cifar(11, 10, 3, width=0.25))
    keep = prune.slimming_keep(model, 0.99)
    assert all(len(v) >= 1 for v in keep.values())
    for conv, bn in prune.conv_bn_pairs(model):
        if len(keep[conv]) == 1:
            assert keep[conv].item() == bn.weight.abs().argmax().item()


def test_bn_l1_penalty_adds_the_sign_of_the_scale():
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -0.5, 0.0]))
    bn.weight.grad = torch.zeros(3)

    class S:
        model = bn

    prune.BNL1Penalty(0.1).after_backward(S)
    assert torch.equal(bn.weight.grad, torch.tensor([0.1, -0.1, 0.0]))


def test_penalty_in_fit_shrinks_bn_scales():
    from prunebook import data

    x = torch.randn(64, 1, 8, 8)
    ds = data.ImageSet(x, torch.arange(64) % 2, ("a", "b"), "noise")
    plain, penalised = models.SmallCNN(1, 2, (4,), 8, image_size=8), models.SmallCNN(1, 2, (4,), 8, image_size=8)
    penalised.load_state_dict(plain.state_dict())
    kw = dict(epochs=3, batch_size=16, lr=0.05, weight_decay=0, progress_bar=False)
    train.fit(plain, ds, **kw)
    train.fit(penalised, ds, callbacks=[prune.BNL1Penalty(1e-2)], **kw)
    scale = lambda m: sum(b.weight.abs().sum() for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    assert scale(penalised) < scale(plain)


def test_global_magnitude_on_channels_last_convs():
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv2d(4, 4, 3)).to(memory_format=torch.channels_last)
    prune.global_magnitude(net, 0.5)
    net.to(memory_format=torch.channels_last)  # as train.fit leaves a pruned CNN
    prune.global_magnitude(net, 0.75)
    assert prune.sparsity(net) == pytest.approx(0.75, abs=1 / 216)


# ---------------------------------------------------------------- plain-tensor helpers (the foundations lab)


@pytest.mark.parametrize("s", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_magnitude_mask_prunes_exactly_round_s_n_even_with_ties(s):
    w = torch.tensor([0.9, -0.2, 0.1, 0.2, -0.5, 0.2, 0.2, 0.0])
    m = prune.magnitude_mask(w, s)
    assert int((m == 0).sum()) == round(s * 8)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    if 0 < s < 1:
        assert w.abs()[m == 0].max() <= w.abs()[m == 1].min()


def test_magnitude_mask_matches_torch_l1_unstructured_and_takes_channels_last():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3)
    m = prune.magnitude_mask(conv.weight.to(memory_format=torch.channels_last), 0.6)  # l1_unstructured refuses it
    assert m.shape == conv.weight.shape
    prune.torch_prune.l1_unstructured(conv, "weight", amount=round(0.6 * conv.weight.numel()))
    assert torch.equal(m, conv.weight_mask)


def test_channels_to_keep_rounds_the_number_removed_and_keeps_one():
    assert prune.channels_to_keep(64, 0.3) == 45  # 64 − round(19.2); a floor of 64·0.7 gives 44
    assert prune.channels_to_keep(16, 0.5) == 8
    assert prune.channels_to_keep(10, 0.0) == 10
    assert prune.channels_to_keep(10, 1.0) == 1
    with pytest.raises(ValueError):
        prune.channels_to_keep(10, 1.5)


def test_sensitivity_scan_prunes_one_layer_at_a_time_and_restores_it():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    seen = []

    def evaluate(model):
        seen.append([layer_sparsity for layer_sparsity in prune.layer_sparsity(model).values()])
        return float(model(torch.ones(1, 10)).sum())

    scan = prune.sensitivity_scan(net, evaluate, [0.5, 0.9])
    assert list(scan) == ["0", "2"] and all(len(v) == 2 for v in scan.values())
    assert seen == [[0.5, 0.0], [0.9, 0.0], [0.0, 0.5], [0.0, 0.9]]
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    prune.global_magnitude(net, 0.5)
    with pytest.raises(ValueError, match="make_permanent"):
        prune.sensitivity_scan(net, evaluate, [0.5])

"""01_ap: the dead-neuron meter and AP's pruning metric, on hand-built tensors and toy networks."""

import ap
import pytest
import torch
from prunebook import data, models, prune, train
from torch import nn


def test_meter_counts_zeros_of_a_hand_built_activation():
    relu = nn.Sequential(nn.ReLU())
    x = torch.tensor([[1.0, -2.0, 0.0, 3.0], [-1.0, -1.0, 2.0, 0.5]])  # 4 of 8 outputs are 0
    with ap.DeadNeuronMeter(relu, train_only=True) as meter:
        relu(x)
    assert meter.rate() == 0.5 and meter.layer_rates() == {"0": 0.5}
    relu.eval()
    with ap.DeadNeuronMeter(relu, train_only=True) as meter:
        relu(x)  # eval-mode passes are not training batches
    assert meter.outputs == {"0": 0}
    with ap.DeadNeuronMeter(relu, train_only=False, track_units=True) as meter:
        relu(x)
    assert meter.rate() == 0.5 and meter.never_active() == 0.25  # unit 1 is dead for both inputs


def test_meter_hooks_every_relu_of_a_resnet_block_once_per_call():
    net = models.resnet_cifar(20, in_channels=1)
    calls = []
    meter = ap.DeadNeuronMeter(net)
    assert len(meter.relus) == 1 + 9 * 2  # the stem, and two per block: after conv1 and after the addition
    with meter:
        for name, m in meter.relus.items():
            m.register_forward_hook(lambda mod, i, o, name=name: calls.append(name))
        net(torch.randn(2, 1, 32, 32))
    assert sorted(calls) == sorted(meter.relus) and len(calls) == len(set(calls))
    block = net.blocks[0]
    assert meter.outputs["blocks.0.relu2"] == 2 * 16 * 32 * 32 and isinstance(block.relu2, nn.ReLU)


def test_alive_only_leaves_out_units_whose_inputs_are_all_pruned():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0], [-1.0, -1.0]]))
        net[0].bias.copy_(torch.tensor([0.0, -1.0, 0.0]))  # unit 1 is cut off and always dead
    x = torch.ones(4, 2)
    with ap.DeadNeuronMeter(net, producers=ap.sequential_producers(net)) as meter:
        net(x)
    assert meter.rate() == pytest.approx(2 / 3)            # units 1 and 2 are dead
    assert meter.rate(alive_only=True) == pytest.approx(1 / 2)   # unit 1 does not count
    mlp = models.MLP()
    assert ap.sequential_producers(mlp) == {"net.2": mlp.net[1], "net.4": mlp.net[3]}


def test_channel_level_rate_counts_whole_zero_maps():
    relu = nn.ReLU()
    x = torch.zeros(2, 3, 2, 2)
    x[0, 0, 0, 0] = 1.0  # input 0: channel 0 fires at one position, channels 1 and 2 are all zero
    x[1, :, 1, 1] = 1.0  # input 1: every channel fires at one position
    with ap.DeadNeuronMeter(relu) as meter:
        relu(x)
    assert meter.rate() == pytest.approx(1 - 4 / 24)              # per element: 4 of 24 outputs fire
    assert meter.rate(level="channel") == pytest.approx(2 / 6)    # per channel: 2 of 6 (input, channel) maps dead
    with ap.DeadNeuronMeter(relu) as meter:                       # a linear layer: the readings coincide
        relu(torch.tensor([[1.0, -1.0, 0.0], [2.0, 3.0, -1.0]]))
    assert meter.rate(level="channel") == meter.rate() == pytest.approx(3 / 6)
    with pytest.raises(ValueError):
        meter.rate(alive_only=True, level="channel")


def test_dynamic_dnr_per_epoch_from_fit():
    torch.manual_seed(0)
    net = models.MLP(in_features=16, hidden=(8,), num_classes=2)
    train_set = data.ImageSet(torch.randn(64, 16), torch.randint(0, 2, (64,)), ("a", "b"), "toy")
    meter = ap.DeadNeuronMeter(net, producers=ap.sequential_producers(net))
    with meter:
        history = train.fit(net, train_set, epochs=2, batch_size=16, progress_bar=False, val=train_set,
                            callbacks=[meter])
    assert len(meter.epochs) == 2 and [h["dnr"] for h in history] == meter.epochs
    assert [h["dnr_channel"] for h in history] == meter.epochs_channel == meter.epochs  # linear layers only
    assert all(0 <= h["dnr"] <= 1 for h in history)


def toy_layer():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-0.5, 0.3, -0.2, -0.9]]))
    return layer


def test_ap_selects_the_alive_negatives_that_moved_least():
    layer = toy_layer()
    params = [(layer, "weight")]
    start = [torch.tensor([[-0.1, 0.3, -0.25, -0.9]])]  # moved: 0.4, 0 (positive), 0.05, 0 (negative, tie at 0)
    chosen = ap.ap_select(params, start, 2)[0]
    assert chosen.tolist() == [[False, False, True, True]]
    chosen = ap.ap_select(params, start, 1)[0]
    assert chosen.tolist() == [[False, False, False, True]]
    torch.nn.utils.prune.custom_from_mask(layer, "weight", torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    chosen = ap.ap_select(params, start, 1)[0]  # the pruned weight is no candidate any more
    assert chosen.tolist() == [[False, False, True, False]]
    with pytest.raises(ValueError, match="candidates"):
        ap.ap_select(params, start, 3)


def test_ap_ties_break_by_position_and_ablations_change_the_pool():
    layer = toy_layer()
    params = [(layer, "weight")]
    same = [layer.weight.detach().clone()]  # nothing moved: every score is 0
    assert ap.ap_select(params, same, 2)[0].tolist() == [[True, False, True, False]]
    assert ap.ap_select(params, same, 1, score="magnitude")[0].tolist() == [[False, False, True, False]]
    assert ap.ap_select(params, same, 2, negative_only=False)[0].tolist() == [[True, True, False, False]]
    g = torch.Generator().manual_seed(0)
    assert int(ap.ap_select(params, same, 3, score="random", generator=g)[0].sum()) == 3


def test_k_zero_is_a_no_op():
    layer = toy_layer()
    params = [(layer, "weight")]
    before = layer.weight.detach().clone()
    ap.prune_chosen(params, ap.ap_select(params, [before], 0))
    assert torch.equal(layer.weight.detach(), before)


def test_pruning_a_negative_weight_never_lowers_a_preactivation():
    layer = toy_layer()
    x = torch.rand(100, 4)  # inputs after a ReLU are >= 0
    before = layer(x).detach()
    ap.prune_chosen([(layer, "weight")], ap.ap_select([(layer, "weight")], [layer.weight.detach().clone()], 2))
    assert (layer(x).detach() >= before - 1e-7).all()


@pytest.mark.parametrize("score", ["delta", "magnitude", "random"])
def test_both_arms_reach_the_same_sparsity(score):
    torch.manual_seed(0)
    arms = {}
    for arm in ("X", "X+AP"):
        net = models.MLP(in_features=20, hidden=(30, 10), num_classes=3)
        start = prune.snapshot(net)
        step = ap.ap_step(start, net, score=score) if arm == "X+AP" else None

        def train_fn(model, r):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn_like(p))  # a stand-in for training: the weights move
            return {}

        rows = prune.iterative_magnitude_pruning(net, train_fn, rounds=4, rewind_to=start, prune_step=step)
        arms[arm] = ([row["sparsity"] for row in rows], prune.masks(net))
    assert arms["X"][0] == arms["X+AP"][0]
    assert arms["X"][0][-1] == pytest.approx(1 - 0.8 ** 4, abs=1e-3)
    differ = any(not torch.equal(arms["X"][1][k], arms["X+AP"][1][k]) for k in arms["X"][1])
    assert differ  # AP chose other weights than magnitude alone


def test_ap_step_refuses_a_share_larger_than_the_round():
    net = models.MLP(in_features=4, hidden=(3,), num_classes=2)
    with pytest.raises(ValueError, match="p2"):
        ap.ap_step(prune.snapshot(net), net, p2=0.3, rate=0.2)


def test_alive_only_for_conv_channels():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].weight[1] = 0.0  # channel 1 is cut off: all its outputs are 0
    with ap.DeadNeuronMeter(net, producers=ap.sequential_producers(net)) as meter:
        net(torch.ones(3, 1, 4, 4))
    assert meter.rate() == 0.5 and meter.rate(alive_only=True) == 0.0
    assert meter.outputs_alive["1"] == 3 * 16


def test_imp_run_pairs_the_arms_and_resumes_from_the_cache(tmp_cache):
    settings = {"lenet": {**ap.SETTINGS["smoke"]["lenet"], "n_train": 200, "n_test": 100}}
    x = ap.imp_run(ap.plan(settings, "lenet", arm="X"), progress=False)
    with_ap = ap.imp_run(ap.plan(settings, "lenet", arm="X+AP"), progress=False)
    assert [r["sparsity"] for r in x] == [r["sparsity"] for r in with_ap] == [0.0, 0.2, pytest.approx(0.36, abs=1e-5)]
    assert x[0] == with_ap[0]  # round 0 trains the same dense network
    assert ap.imp_run(ap.plan(settings, "lenet", arm="X+AP"), progress=False) == with_ap
    with pytest.raises(ValueError, match="arms"):
        ap.imp_run(ap.plan(settings, "lenet", arm="AP alone"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_count_equals_count_nonzero(dtype):
    x = torch.randn(8, 5, 6, 6).relu().to(dtype).contiguous(memory_format=torch.channels_last)
    assert int(ap._nonzero(x)) == int(torch.count_nonzero(x))
    assert ap._nonzero(x, dims=(0, 2, 3)).tolist() == torch.count_nonzero(x, dim=(0, 2, 3)).tolist()


def test_code_retrain_revives_pruned_weights_that_carry_momentum():
    torch.manual_seed(0)
    net = models.MLP(in_features=4, hidden=(3,), num_classes=2)
    train_set = data.ImageSet(torch.randn(32, 4), torch.randint(0, 2, (32,)), ("a", "b"), "toy")
    capture = ap.MomentumCapture(net)
    train.fit(net, train_set, epochs=1, batch_size=8, progress_bar=False, callbacks=[capture])
    assert set(capture.buffers) == {n for n, _ in net.named_parameters()}
    params = prune.prunable(net)
    prune.global_magnitude(net, 0.5, params)
    assert set(ap.MomentumCapture(net).names.values()) == set(capture.buffers)  # weight_orig → weight
    first = params[0][0]
    pruned = first.weight_mask == 0
    buffers = {k: v.clone() for k, v in capture.buffers.items()}
    buffers[[n for n in buffers if n.endswith("weight")][0]][pruned] = 0  # no momentum: stays pruned
    def build():
        return models.MLP(in_features=4, hidden=(3,), num_classes=2)

    kept_zero = ap.code_retrain(net, build, buffers, train_set, epochs=1, batch_size=8, lr=0.05, seed=0)
    assert (kept_zero.net[1].weight[pruned] == 0).all()
    revived = ap.code_retrain(net, build, capture.buffers, train_set, epochs=1, batch_size=8, lr=0.05, seed=0)
    moved = capture.buffers[[n for n in buffers if n.endswith("weight")][0]][pruned] != 0
    assert (revived.net[1].weight[pruned][moved] != 0).all() and moved.any()
    assert (first.weight[pruned] == 0).all()  # the original network is left as it was

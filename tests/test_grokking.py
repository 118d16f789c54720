"""Unit tests of notebooks/02_grokking/grokking.py: data, IPR, the analytic solution, training, pruning, phases."""

import math

import grokking as gk
import numpy as np
import pytest
import torch

# ---------------------------------------------------------------------------------------------- data


def test_dataset_sizes_and_exact_corrupted_fraction():
    t = gk.modular_task(97, alpha=0.5, xi=0.35, seed=0)
    assert t.pairs.shape == (97 * 97, 2)
    assert t.n_train == int(0.5 * 97 * 97) == 4704 and t.n_test == 9409 - 4704
    assert t.n_noise == int(0.35 * 4704) == 1646
    # every pair exactly once, true labels are the sums
    ids = t.pairs[:, 0] * 97 + t.pairs[:, 1]
    assert torch.equal(ids.sort().values, torch.arange(97 * 97))
    assert torch.equal(t.true_labels, (t.pairs[:, 0] + t.pairs[:, 1]) % 97)
    # only the first n_noise training labels may differ from the truth; about 1/p of them agree by chance
    assert torch.equal(t.labels[t.n_noise:], t.true_labels[t.n_noise:])
    changed = int((t.labels[:t.n_noise] != t.true_labels[:t.n_noise]).sum())
    assert t.n_noise - 40 <= changed <= t.n_noise
    assert t.labels.min() >= 0 and t.labels.max() < 97
    sizes = {k: (s.stop - s.start) for k, s in ((k, t.subset(k)) for k in gk.SUBSETS)}
    assert sizes == {"train": 4704, "test": 4705, "corrupted": 1646, "clean": 4704 - 1646}


def test_corruption_is_deterministic_and_seeded():
    a, b = gk.modular_task(31, 0.6, 0.3, seed=0), gk.modular_task(31, 0.6, 0.3, seed=0)
    assert torch.equal(a.pairs, b.pairs) and torch.equal(a.labels, b.labels)
    c = gk.modular_task(31, 0.6, 0.3, seed=1)
    assert not torch.equal(a.pairs, c.pairs)
    # xi = 0 corrupts nothing
    clean = gk.modular_task(31, 0.6, 0.0)
    assert clean.n_noise == 0 and torch.equal(clean.labels, clean.true_labels)


def test_seed_zero_is_the_official_split():
    # the official builder: random.seed(420); random.shuffle(list(range(p*p))); torch.manual_seed(0); randint
    import random

    p, alpha, xi = 23, 0.5, 0.3
    random.seed(420)
    order = list(range(p * p))
    random.shuffle(order)
    torch.manual_seed(0)
    n_train = int(alpha * p * p)
    noise = torch.randint(0, p, (int(xi * n_train),))
    t = gk.modular_task(p, alpha, xi, seed=0)
    assert torch.equal(t.pairs[:, 0] * p + t.pairs[:, 1], torch.tensor(order))
    assert torch.equal(t.labels[:len(noise)], noise)


def test_by_pair_masks_partition_the_pairs():
    t = gk.modular_task(23, 0.4, 0.5)
    d = t.by_pair()
    assert int(d["train"].sum()) == t.n_train and not (d["train"] & d["test"]).any()
    assert torch.equal(d["corrupted"] | d["clean"], d["train"])
    ids = t.pairs[:, 0] * 23 + t.pairs[:, 1]
    assert torch.equal(d["labels"][ids], t.labels)


# ---------------------------------------------------------------------------------------------- IPR


def test_ipr_of_pure_cosine_is_one_with_rfft_and_half_with_full_fft():
    p = 97
    x = torch.cos(2 * math.pi * 7 * torch.arange(p, dtype=torch.float64) / p + 0.3)
    assert gk.ipr(x).item() == pytest.approx(1.0, abs=1e-12)
    assert gk.ipr(x, full_fft=True).item() == pytest.approx(0.5, abs=1e-12)


def test_ipr_of_one_hot_row_is_one_over_49():
    x = torch.zeros(97, dtype=torch.float64)
    x[13] = 1.0
    assert gk.ipr(x).item() == pytest.approx(1 / 49, abs=1e-12)
    assert gk.ipr(x, full_fft=True).item() == pytest.approx(1 / 97, abs=1e-12)


def test_neuron_ipr_averages_u_v_and_w_columns():
    params = gk.init_params([0], p=11, width=4)
    k, parts = gk.neuron_ipr(params, parts=True)
    assert k.shape == (1, 4)
    assert torch.allclose(parts["W"][0, 2], gk.ipr(params["W"][0, :, 2]))
    assert torch.allclose(k, (parts["U"] + parts["V"] + parts["W"]) / 3)


def test_random_init_ipr_is_small():
    k = gk.neuron_ipr(gk.init_params([0], p=97, width=500))
    assert 0.03 < k.mean().item() < 0.05


def test_init_std_matches_the_official_formula():
    assert gk.init_std(500) == pytest.approx(0.25 ** 0.5 / (2 * 500) ** (1 / 3))


# ---------------------------------------------------------------------------------------------- analytic solution


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_analytic_network_is_fully_accurate_with_ipr_one(seed):
    params = gk.analytic_params(97, 500, seed=seed)
    t = gk.modular_task(97, 0.5, 0.0)
    acc = gk.evaluate(params, [t])
    assert acc["train"][0] == 1.0 and acc["test"][0] == 1.0
    assert torch.allclose(gk.neuron_ipr(params), torch.ones(1, 500), atol=1e-4)


# ---------------------------------------------------------------------------------------------- model and training


def _small_batch(B=2, p=13, width=16, seed=0):
    tasks = [gk.modular_task(p, 0.5, xi, seed=s) for xi, s in zip((0.0, 0.3, 0.5)[:B], range(B))]
    n = tasks[0].n_train
    m = torch.stack([t.pairs[:n, 0] for t in tasks])
    nn_ = torch.stack([t.pairs[:n, 1] for t in tasks])
    y = torch.stack([t.labels[:n] for t in tasks])
    params = gk.init_params(range(seed, seed + B), p=p, width=width)
    work = {"h": torch.empty(B, n, width), "a": torch.empty(B, n, width), "out": torch.empty(B, n, p),
            "gU": torch.empty(B, p, width), "gV": torch.empty(B, p, width), "gW": torch.empty(B, width, p)}
    return params, m, nn_, y, work


@pytest.mark.parametrize("with_dropout", [False, True])
def test_fused_step_matches_autograd(with_dropout):
    params, m, n, y, work = _small_batch()
    B, nb = y.shape
    scale = None
    if with_dropout:
        g = torch.Generator().manual_seed(3)
        scale = (torch.rand(B, nb, 16, generator=g) >= 0.4).float() / 0.6
    onehot = torch.zeros(B, nb, 13).scatter_(2, y[..., None], 1.0)
    loss, grads = gk.fused_step(gk._flip(params), m, n, onehot, work, scale)
    leaf = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    ref = gk.mse_per_model(gk.forward(leaf, m, n, dropout_scale=scale), y)
    ref_grads = torch.autograd.grad(ref.sum(), list(leaf.values()))
    assert torch.allclose(loss, ref, rtol=1e-5)
    for k, rg in zip(leaf, ref_grads):
        assert torch.allclose(grads[k].transpose(1, 2), rg, atol=1e-7, rtol=1e-4), k


def test_the_model_equations_by_hand():
    # h = U e_m + V e_n, φ(h) = h², f = W φ(h) on one model with N = 2 neurons and p = 3
    U = torch.tensor([[[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]]])  # (B, N, p)
    V = torch.tensor([[[0.5, 0.0, -2.0], [1.0, 1.0, 1.0]]])
    W = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]]])  # (B, p, N)
    h = gk.embed(U[:, :, [2]], V[:, :, [0]]).transpose(1, 2)  # m = 2, n = 0: U's column 2 plus V's column 0
    assert h.tolist() == [[[3.5, 2.0]]]
    a = gk.activation(h)
    assert a.tolist() == [[[12.25, 4.0]]]
    assert gk.readout(a, W.transpose(1, 2)).tolist() == [[[12.25, 4.0, 20.5]]]
    assert torch.equal(gk.forward({"U": U, "V": V, "W": W}, torch.tensor([2]), torch.tensor([0])),
                       torch.tensor([[[12.25, 4.0, 20.5]]]))
    buf = torch.empty(1, 1, 2)
    assert gk.activation(h.contiguous(), out=buf) is buf and buf.tolist() == [[[12.25, 4.0]]]


def test_forward_shared_and_per_model_indices_agree():
    params, m, n, y, _ = _small_batch()
    shared = gk.forward(params, m[0], n[0])
    per_model = gk.forward(params, m[:1].expand(2, -1), n[:1].expand(2, -1))
    assert torch.allclose(shared, per_model)


def test_adamw_update_matches_torch_adamw_per_model_decay():
    torch.manual_seed(0)
    w = torch.randn(2, 5, 3)
    grads = [torch.randn(2, 5, 3) for _ in range(4)]
    ours, state = {"w": w.clone()}, {}
    for g in grads:
        gk.adamw_update(ours, {"w": g}, state, lr=0.01, weight_decay=torch.tensor([0.0, 5.0]))
    for b, wd in enumerate([0.0, 5.0]):
        ref = w[b].clone().requires_grad_(True)
        opt = torch.optim.AdamW([ref], lr=0.01, betas=(0.9, 0.98), eps=1e-8, weight_decay=wd)
        for g in grads:
            ref.grad = g[b].clone()
            opt.step()
        assert torch.allclose(ours["w"][b], ref.detach(), atol=1e-6)


def test_batchnorm_matches_torch_batchnorm1d():
    torch.manual_seed(0)
    a = torch.randn(1, 32, 6) ** 2
    gamma, beta = torch.rand(1, 6) + 0.5, torch.randn(1, 6)
    state = {"mean": torch.zeros(1, 6), "var": torch.ones(1, 6)}
    bn = torch.nn.BatchNorm1d(6)
    with torch.no_grad():
        bn.weight.copy_(gamma[0])
        bn.bias.copy_(beta[0])
    ours = gk.batchnorm(a, gamma, beta, state, training=True)
    assert torch.allclose(ours[0], bn(a[0]), atol=1e-5)
    assert torch.allclose(state["mean"][0], bn.running_mean) and torch.allclose(state["var"][0], bn.running_var)
    bn.eval()
    assert torch.allclose(gk.batchnorm(a, gamma, beta, state, training=False)[0], bn(a[0]), atol=1e-5)


def test_training_is_deterministic_and_batching_does_not_change_a_model():
    tasks = [gk.modular_task(13, 0.5, xi, seed=0) for xi in (0.0, 0.3)]
    kw = {"steps": 15, "width": 24, "weight_decay": [1.0, 5.0], "log_every": 5}
    a = gk.train(tasks, seeds=[0, 1], **kw)
    b = gk.train(tasks, seeds=[0, 1], **kw)
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k])
    alone = gk.train(tasks[1:], seeds=[1], steps=15, width=24, weight_decay=5.0, log_every=5)
    for k in a.params:
        assert torch.allclose(a.params[k][1], alone.params[k][0], atol=1e-5)
    assert list(a.steps) == [0, 1, 5, 10, 15] and a.acc["train"].shape == (5, 2)


def test_batchnorm_and_minibatch_training_run():
    tasks = [gk.modular_task(13, 0.6, 0.2, seed=0)] * 2
    run = gk.train(tasks, steps=6, seeds=[0, 1], batchnorm=True, batch_size=16, lr=0.005, width=16, log_every=3)
    assert set(run.params) == {"U", "V", "W", "gamma", "beta"} and run.bn_state["mean"].shape == (2, 16)
    assert np.isfinite(run.acc["test"]).all()



def test_a_dry_run_trains_two_steps_and_files_late_snapshots_under_the_step_asked_for(monkeypatch):
    monkeypatch.setenv("PRUNEBOOK_DRY_RUN", "1")
    tasks = [gk.modular_task(13, 0.5, 0.3, seed=0)]
    run = gk.train(tasks, steps=500, seeds=[0], width=16, log_every=10, snapshot_steps=(0, 1, 300, 500))
    assert list(run.steps) == [0, 1, 2] and set(run.snapshots) == {0, 1, 300, 500}
    assert torch.equal(run.snapshots[500]["W"], run.params["W"])
    assert torch.equal(run.snapshots[300]["U"], run.params["U"])
    monkeypatch.delenv("PRUNEBOOK_DRY_RUN")
    full = gk.train(tasks, steps=5, seeds=[0], width=16, log_every=10, snapshot_steps=(0, 9))
    assert list(full.steps) == [0, 1, 5] and set(full.snapshots) == {0}  # outside a dry run: only steps it reaches


# ---------------------------------------------------------------------------------------------- pruning


def test_pruning_a_neuron_zeroes_exactly_its_weights():
    params = gk.init_params([0, 1], p=11, width=8)
    pruned = gk.prune_neurons(params, [2, 5])
    for k in ("U", "V"):
        assert (pruned[k][:, [2, 5], :] == 0).all()
        keep = [i for i in range(8) if i not in (2, 5)]
        assert torch.equal(pruned[k][:, keep], params[k][:, keep])
    assert (pruned["W"][:, :, [2, 5]] == 0).all()
    assert torch.equal(pruned["W"][:, :, [0, 1, 3, 4, 6, 7]], params["W"][:, :, [0, 1, 3, 4, 6, 7]])
    assert torch.count_nonzero(params["U"]) == params["U"].numel()  # the original is untouched


def test_pruning_curves_match_pruning_the_weights():
    t = gk.modular_task(13, 0.5, 0.3)
    run = gk.train([t], steps=20, seeds=[0], width=16, log_every=20)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    res = gk.pruning_curves(run.params, t, {"random": order}, [0.0, 0.25, 0.5, 1.0])
    for i, c in enumerate(res["counts"]):
        direct = gk.evaluate(gk.prune_neurons(run.params, order[:c]), [t])
        for k in gk.SUBSETS:
            assert res["curves"]["random"][k][i] == pytest.approx(direct[k][0])
    assert res["counts"].tolist() == [0, 4, 8, 16]


# ---------------------------------------------------------------------------------------------- phases


@pytest.mark.parametrize("train, test, xi, phase", [
    (0.98, 0.98, 0.35, "coexistence"),
    (0.90, 0.90, 0.35, "coexistence"),          # both thresholds are inclusive
    (0.7855, 1.0, 0.35, "partial inversion"),
    (0.70, 0.95, 0.35, "partial inversion"),    # train = 1.05 - xi exactly
    (0.6537, 1.0, 0.35, "full inversion"),
    (0.80, 1.0, 0.20, "full inversion"),        # 0.80 < 1.05 - 0.20
    (1.0, 0.30, 0.35, "memorization"),
    (0.95, 0.10, 0.60, "memorization"),
    (0.0091, 0.0108, 0.35, "forgetting"),
    (0.60, 0.50, 0.35, "forgetting"),
])
def test_phase_rules(train, test, xi, phase):
    assert gk.classify_phase(train, test, xi) == phase

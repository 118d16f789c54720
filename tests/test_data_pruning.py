"""Unit tests of the 08_data_pruning series package (notebooks/08_data_pruning/data_pruning/): exact and fast."""

import math

import data_pruning as dp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

# ------------------------------------------------------------------------------------------- perceptron data


def test_labels_are_the_sign_of_the_teacher_margin():
    g = torch.Generator().manual_seed(0)
    x, y, teacher = dp.teacher_student_data(500, 30, g)
    assert x.shape == (500, 30) and y.shape == (500,)
    assert math.isclose(teacher.norm().item(), 1.0, rel_tol=1e-12)
    assert torch.equal(y, torch.sign(x @ teacher))
    assert set(y.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("frac", [0.1, 0.25, 0.5, 0.73, 1.0])
def test_keep_indices_keeps_exactly_the_fraction(frac):
    score = torch.randn(4, 200, generator=torch.Generator().manual_seed(1))
    for keep in dp.KEEPS:
        idx = dp.keep_indices(score, frac, keep, generator=torch.Generator().manual_seed(2))
        assert idx.shape == (4, round(frac * 200))
        assert all(len(set(row.tolist())) == idx.shape[1] for row in idx)  # no repeats


def test_keep_indices_hard_and_easy_take_the_extremes():
    score = torch.tensor([0.3, -2.0, 5.0, 1.0, 0.0, 4.0, -1.0, 2.0])  # high = hard
    assert dp.keep_indices(score, 0.25, "hard").tolist() == [2, 5]  # the two highest
    assert dp.keep_indices(score, 0.25, "easy").tolist() == [1, 6]  # the two lowest
    assert dp.keep_indices(score, 0.5, "hard").tolist() == [2, 3, 5, 7]


def test_margin_pruning_keeps_smallest_margins_for_hard():
    g = torch.Generator().manual_seed(3)
    x, y, teacher = dp.teacher_student_data(1000, 20, g)
    margin = (x @ teacher).abs()
    hard = dp.keep_indices(-margin, 0.2, "hard")
    easy = dp.keep_indices(-margin, 0.2, "easy")
    assert len(hard) == len(easy) == 200
    assert margin[hard].max() <= margin.sort().values[199] + 1e-12
    assert margin[easy].min() >= margin.sort().values[800] - 1e-12


def test_sampled_pruned_sets_have_the_right_sizes_labels_and_margins():
    g = torch.Generator().manual_seed(4)
    x, y = dp.sample_pruned_perceptron(3, 1000, 25, 0.1, "hard", theta=0.0, generator=g)
    assert x.shape == (3, 100, 25) and y.shape == (3, 100)
    assert torch.equal(y, torch.sign(x[..., 0]))  # the teacher is e_1
    # the kept teacher margins are the 10 % smallest of a standard normal: below ~ the 55th percentile of |z|
    assert x[..., 0].abs().max() < 0.3
    x_easy, _ = dp.sample_pruned_perceptron(2, 1000, 25, 0.1, "easy", generator=g)
    assert x_easy[..., 0].abs().min() > 1.2
    # with a probe at angle theta the kept examples have small probe margins, not small teacher margins
    theta = math.radians(30)
    xp, yp = dp.sample_pruned_perceptron(2, 2000, 10, 0.05, "hard", theta=theta, generator=g)
    probe = dp.probe_direction(theta, 10)
    assert (xp @ probe).abs().max() < 0.15
    assert torch.equal(yp, torch.sign(xp[..., 0]))


def test_max_margin_matches_the_dual_solution_on_a_small_problem():
    from scipy.optimize import nnls  # noqa: F401  (scipy is there; the check below is self-contained)

    g = torch.Generator().manual_seed(5)
    x, y, _ = dp.teacher_student_data(60, 8, g)
    w = dp.max_margin(x[None], y[None])[0]
    margins = y * (x @ w)
    kappa = margins.min()
    # KKT: the max-margin direction is a non-negative combination of the support vectors (margin == kappa)
    support = (margins - kappa).abs() < 1e-6
    assert support.sum() >= 2
    coef, *_ = np.linalg.lstsq((y[support, None] * x[support]).T.numpy(), w.numpy(), rcond=None)
    assert (coef > -1e-8).all()
    assert np.allclose((y[support, None] * x[support]).T.numpy() @ coef, w.numpy(), atol=1e-6)


def test_theory_without_pruning_matches_the_known_large_alpha_limit():
    # the maximal-stability perceptron: error ~ 0.50 / alpha at large alpha (Opper et al. 1990)
    point = dp.theory_perceptron(40.0, 1.0, "random")
    assert 0.48 < point.error * 40 < 0.52
    # and the 2-D (probe) solver reduces to the 1-D one as theta -> 0
    a = dp.theory_perceptron(2.0, 0.3, "hard")
    b = dp.theory_perceptron(2.0, 0.3, "hard", theta=1e-4)
    assert abs(a.error - b.error) < 1e-4


def test_keep_threshold_keeps_the_fraction_of_a_gaussian():
    from scipy.special import erf

    for f in (0.1, 0.5, 0.9):
        assert math.isclose(erf(dp.keep_threshold(f, "hard") / math.sqrt(2)), f, rel_tol=1e-10)
        assert math.isclose(1 - erf(dp.keep_threshold(f, "easy") / math.sqrt(2)), f, rel_tol=1e-10)


# ------------------------------------------------------------------------------------------- deep-net scores


def test_el2n_on_a_hand_built_example():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # softmax: (0.5, 0.5) and (0.75, 0.25)
    labels = torch.tensor([0, 1])
    expected = torch.tensor([math.sqrt(0.25 + 0.25), math.sqrt(0.75 ** 2 + 0.75 ** 2)])
    assert torch.allclose(dp.el2n(logits, labels), expected, atol=1e-6)


def test_grand_equals_the_norm_of_each_examples_own_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])
    got = dp.grand(model, x, y, batch_size=2)
    for i in range(5):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))
        assert torch.allclose(got[i], norm, atol=1e-6)


def test_forgetting_events_on_a_hand_made_history():
    # rows are checks over time, columns examples
    history = torch.tensor([
        [1, 0, 1, 0, 1],
        [0, 1, 1, 0, 1],
        [1, 0, 1, 0, 0],
        [0, 1, 1, 0, 1],
    ], dtype=torch.bool)
    # ex 0: 1→0, 1→0 = 2; ex 1: 1→0 once = 1; ex 2: never forgotten; ex 3: never learned (→ T = 4); ex 4: once
    assert dp.forgetting_events(history).tolist() == [2.0, 1.0, 0.0, 4.0, 1.0]
    assert dp.forgetting_events(history, never_learned=99).tolist()[3] == 99.0


def test_prototype_distance_on_a_toy_embedding():
    # two tight clusters on the unit circle, plus one point half-way between them
    a = torch.tensor([[1.0, 0.0], [0.99, 0.05], [0.99, -0.05]])
    b = torch.tensor([[0.0, 1.0], [0.05, 0.99], [-0.05, 0.99]])
    middle = torch.tensor([[1.0, 1.0]])
    emb = torch.cat([a, b, middle])
    d = dp.prototype_distance(emb, k=2, seed=0)
    assert d.shape == (7,)
    assert d.argmax().item() == 6  # the odd one out is the hardest
    assert d[6] > 5 * d[:6].max()
    # Euclidean version: distance of a cluster member to its centroid, by hand
    d_euc = dp.prototype_distance(torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 4.0]]), k=2,
                                  cosine=False)
    assert torch.allclose(d_euc, torch.tensor([1.0, 1.0, 2.0, 2.0]))


def test_kmeans_finds_hand_made_clusters_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.5 * torch.randn(40, 2, generator=g) for c in centres])
    truth = torch.arange(3).repeat_interleave(40)
    c1, a1 = dp.kmeans(x, 3, seed=7)
    c2, a2 = dp.kmeans(x, 3, seed=7)
    assert torch.equal(a1, a2) and torch.equal(c1, c2)
    for k in range(3):  # each true blob is one cluster, and the clusters differ
        assert a1[truth == k].unique().numel() == 1
    assert a1[[0, 40, 80]].unique().numel() == 3
    assert torch.allclose(c1[a1[0]], x[:40].mean(0), atol=1e-5)


def test_nt_xent_prefers_matching_views():
    z = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    matched = dp.nt_xent(z, z + 0.01, temperature=0.1)
    shuffled = dp.nt_xent(z, z.roll(1, 0), temperature=0.1)
    assert matched < 0.1 < shuffled


def test_class_balance():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert dp.class_balance(labels, torch.tensor([0, 2, 4]), 3) == {"min_ratio": 1.0, "max_ratio": 1.0}
    unbalanced = dp.class_balance(labels, torch.tensor([0, 1, 2]), 3)
    assert unbalanced["min_ratio"] == 0.0 and math.isclose(unbalanced["max_ratio"], 2.0)


def test_pruned_indices_draw_the_original_set_then_keep_the_fraction_per_class():
    labels = torch.arange(200) % 4
    score = torch.arange(200, dtype=torch.float)  # later examples are harder
    hard = dp.pruned_indices(labels, score, n0=100, frac=0.2, keep="hard", seed=3)
    easy = dp.pruned_indices(labels, score, n0=100, frac=0.2, keep="easy", seed=3)
    rand = dp.pruned_indices(labels, score, n0=100, frac=0.2, keep="random", seed=3)
    original = set(dp.pruned_indices(labels, score, n0=100, frac=1.0, keep="random", seed=3).tolist())
    assert len(original) == 100
    for idx in (hard, easy, rand):
        assert len(idx) == 20 and set(idx.tolist()) <= original
        assert torch.bincount(labels[idx], minlength=4).tolist() == [5, 5, 5, 5]
    for c in range(4):  # within each class, hard keeps the 5 highest scores of the original set, easy the lowest
        members = sorted(i for i in original if labels[i] == c)
        assert sorted(i for i in hard.tolist() if labels[i] == c) == members[-5:]
        assert sorted(i for i in easy.tolist() if labels[i] == c) == members[:5]
    assert torch.equal(rand, dp.pruned_indices(labels, score, n0=100, frac=0.2, keep="random", seed=3))
    assert not torch.equal(rand, dp.pruned_indices(labels, score, n0=100, frac=0.2, keep="random", seed=4))
    # no balancing: one group, so hard takes the 20 highest scores overall (all from the last classes' range)
    flat = dp.pruned_indices(labels, score, n0=100, frac=0.2, keep="hard", seed=3, groups=torch.zeros_like(labels))
    assert flat.tolist() == sorted(original)[-20:]


def test_nearest_prototype_clusters_blobs_and_load_embedding_checks_rows(tmp_path):
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [1.0, 0.05], [0.0, 1.0], [0.1, 0.9], [0.05, 1.0]])
    dist, cluster = dp.nearest_prototype(emb, k=2, seed=0)
    assert cluster[:3].unique().numel() == 1 and cluster[3:].unique().numel() == 1 and cluster[0] != cluster[3]
    assert torch.equal(dist, dp.prototype_distance(emb, k=2, seed=0))
    np.savez(tmp_path / "e.npz", embedding=emb.numpy(), labels=np.array([0, 0, 0, 1, 1, 1]))
    loaded = dp.load_embedding(tmp_path / "e.npz", n=6)
    assert torch.equal(loaded["embedding"], emb) and loaded["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="6 rows but the pool has 5"):
        dp.load_embedding(tmp_path / "e.npz", n=5)
    with pytest.raises(FileNotFoundError, match="embedding_path"):
        dp.load_embedding(tmp_path / "missing.npz")


def test_whitened_pcs_are_uncorrelated_with_unit_variance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 1, 4, 4, generator=g) * torch.linspace(0.1, 3, 16).reshape(1, 1, 4, 4)
    z, zt, explained = dp.whitened_pcs(x, x[:10], 5)
    assert z.shape == (500, 5) and zt.shape == (10, 5) and 0 < explained < 1
    assert torch.allclose(z.T @ z / 500, torch.eye(5, dtype=z.dtype), atol=1e-8)
    assert torch.allclose(zt, z[:10])


def test_fit_probe_reaches_the_optimum_and_fits_problems_independently():
    from scipy.optimize import minimize

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 60, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 60), generator=g)
    w = dp.fit_probe(x, y, 3, l2=0.1, tol=1e-7)
    for b in range(2):  # the same problem by scipy, one at a time
        xb = torch.cat([x[b], torch.ones(60, 1, dtype=torch.float64)], 1).numpy()
        yb = y[b].numpy()

        def loss(v, xb=xb, yb=yb):
            logits = xb @ v.reshape(4, 3)
            logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
            return (logz - logits[np.arange(60), yb]).mean() + 0.05 * (v.reshape(4, 3)[:3] ** 2).sum()

        ref = minimize(loss, np.zeros(12), method="BFGS", options={"gtol": 1e-9}).x.reshape(4, 3)
        assert np.allclose(w[b].double().numpy(), ref, atol=1e-3)
    err = dp.probe_error(w, x[0], y[0])
    assert err.shape == (2,) and 0 <= err[0] < 1


def test_early_probe_scores_grand_is_el2n_times_the_input_norm():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 4, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    s = dp.early_probe_scores(x, y, 2, runs=1, epochs=3, score_epoch=1, batch_size=32, lr=0.1, seed=0)
    assert set(s) == {"el2n", "grand", "forgetting"}
    assert torch.allclose(s["grand"], s["el2n"] * (x.pow(2).sum(1) + 1).sqrt().float(), rtol=1e-5)
    assert (s["forgetting"] >= 0).all() and s["forgetting"].max() <= 3
    again = dp.early_probe_scores(x, y, 2, runs=1, epochs=3, score_epoch=1, batch_size=32, lr=0.1, seed=0)
    assert torch.equal(s["el2n"], again["el2n"])


def test_probe_runs_are_cached_per_seed_list(tmp_cache, monkeypatch):
    g = torch.Generator().manual_seed(3)
    feats = {"x": torch.randn(80, 3, generator=g), "y": torch.arange(80) % 2, "test_x": torch.randn(20, 3),
             "test_y": torch.arange(20) % 2, "classes": ["a", "b"]}
    s = {k: 0 for k in dp.PROBE_KEYS} | {"l2": 1e-2, "tol": 1e-5, "max_iter": 100}
    calls = []
    real = dp.fit_probe
    monkeypatch.setattr(dp.probe, "fit_probe", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(n0=40, frac=0.5, keep="hard", metric="el2n", scores=[torch.arange(80.0)] * 2, seeds=[0, 1])
    first = dp.probe_runs(feats, s, **kw)
    assert first["n"] == [20, 20] and len(calls) == 1  # two seeds of one size: one batched fit
    assert dp.probe_runs(feats, s, **kw) == first and len(calls) == 1  # from the cache
    dp.probe_runs(feats, s, **{**kw, "seeds": [0, 2]})
    assert len(calls) == 2


def test_grand_of_a_linear_probe_is_el2n_times_the_input_norm_by_autograd():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (7,), generator=g)
    w = torch.randn(5, 3, generator=g, dtype=torch.float64)  # 4 weights and a bias per class
    for i in range(7):
        wi = w.clone().requires_grad_(True)
        logits = torch.cat([x[i], torch.ones(1, dtype=torch.float64)]) @ wi
        F.cross_entropy(logits[None], y[i:i + 1]).backward()
        el2n = (torch.softmax(logits.detach(), -1) - F.one_hot(y[i], 3).double()).norm()
        assert math.isclose(wi.grad.norm().item(), (el2n * (x[i].pow(2).sum() + 1).sqrt()).item(), rel_tol=1e-10)


def test_teacher_task_relabels_by_the_teacher_and_is_realizable(tmp_cache):
    g = torch.Generator().manual_seed(6)
    x, test_x = torch.randn(300, 3, generator=g), torch.randn(100, 3, generator=g)
    y = (x[:, 0] + 0.8 * torch.randn(300, generator=g) > 0).long()  # noisy real labels
    feats = {"x": x, "y": y, "test_x": test_x, "test_y": (test_x[:, 0] > 0).long(), "classes": ["a", "b"]}
    s = {"dataset": "toy", "probe_pool": 300, "n_pcs": 3, "l2": 1e-3, "tol": 1e-6, "max_iter": 500}
    t = dp.teacher_task(feats, s)
    xb = torch.cat([x, torch.ones(300, 1)], 1)
    assert torch.equal(t["y"], (xb @ t["teacher"]).argmax(-1))
    assert torch.equal(t["test_y"], (torch.cat([test_x, torch.ones(100, 1)], 1) @ t["teacher"]).argmax(-1))
    assert t["agreement"] == (t["y"] == y).double().mean().item() and 0.5 < t["agreement"] < 1
    assert torch.equal(t["x"], x)  # the same inputs
    w = dp.fit_probe(x[None], t["y"][None], 2, l2=1e-6, tol=1e-7, max_iter=2000)
    assert dp.probe_error(w, x, t["y"]).item() == 0.0  # a student of the same form fits the teacher's labels


def test_theory_grid_solves_the_unpruned_problem_once_for_every_keep_rule(monkeypatch):
    calls = []
    real = dp.theory.theory_perceptron
    monkeypatch.setattr(dp.theory, "theory_perceptron", lambda *a, **k: calls.append(a[:3]) or real(*a, **k))
    grid = dp.theory_grid([0.5, 2.0], [1.0, 0.5], ("hard", "easy"))
    assert len(calls) == 2 * 3  # f = 1 once, f = 0.5 for each keep rule
    assert np.array_equal(grid["error"][0, 0], grid["error"][1, 0])
    assert not np.allclose(grid["error"][0, 1], grid["error"][1, 1])


def test_simclr_trains_one_batch_of_a_pool_smaller_than_a_batch():
    enc = dp.make_encoder("smallcnn_half")
    losses = dp.simclr_train(enc, torch.rand(12, 1, 28, 28), epochs=1, batch_size=256)
    assert len(losses) == 1 and losses[0] > 0


def test_stand_in_embedding_has_the_papers_shapes_and_loads(tmp_path):
    path = dp.stand_in_embedding(tmp_path / "sub" / "emb.npz", n=30, dim=16, num_classes=10, seed=1)
    loaded = dp.load_embedding(path, n=30)
    assert loaded["embedding"].shape == (30, 16) and loaded["embedding"].min() >= 0
    assert torch.equal(torch.bincount(loaded["labels"]), torch.full((10,), 3))

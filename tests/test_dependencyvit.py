"""Unit tests of notebooks/05_dependencyvit/dependencyvit.py: reversed attention, trees, token pruning, PartShapes."""

import copy

import dependencyvit as D
import numpy as np
import pytest
import torch
from prunebook import data, train

SMALL = {"dim": 32, "depth": 3, "heads": 4}


# ---------------------------------------------------------------- the operator


def test_send_loop_and_matrix_form_on_a_hand_set_example():
    a = torch.tensor([[[[0.75, 0.25], [0.5, 0.5]]]])  # one head: child 0 sends 3/4 to token 0, child 1 half and half
    p = torch.ones(1, 1, 2)
    m = torch.tensor([[1.0, 0.5]])
    v = torch.tensor([[[[2.0], [4.0]]]])
    out, mask = D.reversed_attention(a, p, m, v)
    # out_0 = 0.75·1·2 + 0.5·0.5·4, out_1 = 0.25·1·2 + 0.5·0.5·4
    assert out.flatten().tolist() == [2.5, 1.5]
    assert D.send_loop(a, p, m, v).flatten().tolist() == [2.5, 1.5]
    assert mask[0].tolist() == [[0.75, 0.25], [0.25, 0.25]]  # rows parents, columns children
    assert mask[0].sum(0).tolist() == [1.0, 0.5]  # = M


def test_send_loop_equals_matrix_form_with_several_heads():
    g = torch.Generator().manual_seed(0)
    b, h, n, d = 2, 3, 5, 4
    a = D.attention_weights(torch.randn(b, h, n, d, generator=g, dtype=torch.float64),
                            torch.randn(b, h, n, d, generator=g, dtype=torch.float64))
    p = torch.softmax(torch.randn(b, h, n, generator=g, dtype=torch.float64), dim=1)
    m = torch.rand(b, n, generator=g, dtype=torch.float64)
    v = torch.randn(b, h, n, d, generator=g, dtype=torch.float64)
    out, mask = D.reversed_attention(a, p, m, v)
    assert torch.allclose(out, D.send_loop(a, p, m, v), atol=1e-12)
    assert torch.allclose(mask.sum(1), m, atol=1e-12)


@pytest.fixture
def reversed_layer():
    torch.manual_seed(0)
    layer = D.ReversedAttention(32, 4)
    x = torch.randn(3, 10, 32)
    m_prev = torch.rand(3, 10) + 0.1
    return layer, x, m_prev


def test_head_selector_sums_to_one_and_mask_columns_sum_to_m(reversed_layer):
    layer, x, m_prev = reversed_layer
    p, m = layer.gates(x, m_prev)
    assert p.shape == (3, 4, 10)
    assert torch.allclose(p.sum(1), torch.ones(3, 10), atol=1e-6)
    assert torch.all(m < m_prev) and torch.all(m > 0)  # cumulative: a product of sigmoids
    _, m_out, mask = layer(x, m_prev)
    assert torch.equal(m_out, m)
    assert torch.allclose(mask.sum(1), m, atol=1e-6)  # each child's column sums to its M


def test_message_controller_does_not_change_which_parent_wins(reversed_layer):
    layer, x, _ = reversed_layer
    q, k, v = layer.split(x)
    a = D.attention_weights(q, k)
    p, _ = layer.gates(x, torch.ones(3, 10))
    _, mask_one = D.reversed_attention(a, p, torch.ones(3, 10), v)
    _, mask_m = D.reversed_attention(a, p, torch.rand(3, 10) + 0.01, v)
    assert np.array_equal(D.parents(mask_one), D.parents(mask_m))
    assert not torch.allclose(mask_one, mask_m)


def test_plain_attention_fused_equals_explicit_and_its_mask():
    torch.manual_seed(0)
    attn = D.Attention(32, 4)
    x = torch.randn(2, 9, 32)
    fused, none = attn(x)
    explicit, mask = attn(x, need_mask=True)
    assert none is None
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert torch.allclose(mask.sum(1), torch.ones(2, 9), atol=1e-6)


# ---------------------------------------------------------------- trees


def hand_mask():
    """10 tokens: 0 a root with child 1; 2 and 3 pick each other; 4 a root with 5, and 6 under 5; 7 → 8 → 9 → 7.
    Token 3 receives more than 2 and token 9 more than 7 and 8 (from non-winning entries)."""
    raw = [0, 0, 3, 2, 4, 4, 5, 8, 9, 7]
    mask = np.full((10, 10), 0.05)
    for child, parent in enumerate(raw):
        mask[parent, child] = 0.6
    mask[3, 6] = mask[9, 1] = 0.3
    return mask, raw


def test_tree_of_a_hand_made_mask():
    mask, raw = hand_mask()
    tree = D.extract_tree(mask)
    assert tree.raw_parent.tolist() == raw == D.parents(mask).tolist()
    assert tree.cycles == 2
    assert tree.parent.tolist() == [0, 0, 3, 3, 4, 4, 5, 8, 9, 9]
    assert tree.roots.tolist() == [0, 3, 4, 9]
    assert tree.subtrees().tolist() == [0, 0, 3, 3, 4, 4, 4, 9, 9, 9]
    assert tree.subtrees(tops=[5]).tolist() == [0, 0, 3, 3, 4, 5, 5, 9, 9, 9]
    assert tree.depth().tolist() == [0, 1, 1, 0, 0, 1, 2, 2, 1, 0]


def test_trees_of_model_masks_are_trees_and_subtrees_partition_the_patches():
    torch.manual_seed(0)
    model = D.build("dependencyvit", "partshapes", patch=8, **SMALL).eval()
    with torch.no_grad():
        masks = model.trace(torch.rand(4, 1, 32, 32)).masks
    for mask in masks:
        for image_mask in mask:
            tree = D.extract_tree(image_mask)
            labels = tree.subtrees()
            assert len(labels) == 16
            assert set(labels.tolist()) == set(tree.roots.tolist())  # one subtree per root, every token in one
            assert np.all(tree.parent[labels] == labels)
            assert np.all(tree.depth() < 16)  # every walk ends at a root: no cycle left


# ---------------------------------------------------------------- DependencyViT-Lite


def test_lite_keep_ratios():
    assert D.lite_keep_ratios(4, 0.16) == (0.84, 0.68, 0.52, 0.36)
    model = D.ViT(224, 16, 3, 1000, 48, 12, 4, reversed=True, prune_at=(1, 4, 7, 10), keep=D.lite_keep_ratios(4, 0.16))
    assert list(model.keep_counts.values()) == [165, 133, 102, 71]  # of 196 tokens


def test_lite_keep_ratios_refuses_a_drop_that_leaves_no_token():
    assert D.lite_keep_ratios(2, 0.4) == (0.6, 0.2)  # the cpu profile's largest drop, at two blocks
    assert D.drop_leaves_tokens(0.2, 4) and not D.drop_leaves_tokens(0.25, 4)
    for drop in (0.3, 0.4):  # the paper profile's four blocks: 64 → 45 → 26 → 6 → −13 tokens at 30 %
        assert not D.drop_leaves_tokens(drop, 4)
        with pytest.raises(ValueError, match="choose a drop below 25%"):
            D.lite_keep_ratios(4, drop)


def test_token_pruning_keeps_the_highest_m_and_equals_the_model_on_those_tokens():
    torch.manual_seed(0)
    pruned = D.build("dependencyvit", "partshapes", patch=8, prune_at=(1,), keep=(0.5,), **SMALL).eval()
    full = copy.deepcopy(pruned)
    full.keep_counts = {}
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        tr = pruned.trace(images)
        kept = tr.kept[1]
        assert kept.shape == (3, 8)
        for m, k in zip(tr.ms[1], kept):
            dropped = np.setdiff1d(np.arange(16), k.numpy())
            assert len(set(k.tolist())) == 8 and m[k].min() > m[dropped].max()
        assert torch.equal(tr.positions[2], kept)
        # the full model, stopped after block 1's attention, continued on the kept tokens only
        x = full.tokens(images)
        m = torch.ones(3, 16)
        x, m = full.blocks[0](x, m)
        x, m, _ = full.blocks[1].attend(x, m)
        x, m = D.gather_tokens(x, kept), D.gather_tokens(m, kept)
        x = full.blocks[1].feed(x)
        x, m = full.blocks[2](x, m)
        assert torch.allclose(tr.logits, full.classify(x, m), atol=1e-6)
        assert torch.allclose(pruned(images), tr.logits)
        assert not torch.allclose(tr.logits, full(images), atol=1e-4)


def test_pruning_needs_the_reversed_model():
    with pytest.raises(ValueError, match="reversed"):
        D.build("vit", prune_at=(1,), keep=(0.5,), **SMALL)
    with pytest.raises(ValueError, match="criterion"):
        D.build("dependencyvit", prune_at=(1,), keep=(0.5,), criterion="smallest", **SMALL)


def test_pruning_criteria_keep_the_tokens_they_name():
    torch.manual_seed(0)
    images = torch.rand(3, 1, 32, 32)
    base = D.build("dependencyvit", "partshapes", patch=8, **SMALL).eval()
    with torch.no_grad():
        full = base.trace(images)
        for criterion, score in [("m", full.ms[1]), ("inverse_m", -full.ms[1]), ("received", full.masks[1].sum(-1))]:
            model = copy.deepcopy(base).set_pruning((1,), (5 / 16,), criterion)
            assert model.keep_counts == {1: 5}
            assert torch.equal(model.trace(images).kept[1], D.keep_tokens(score, 5))
        assert base.set_pruning().keep_counts == {} and torch.equal(base(images), full.logits)  # pruning undone
        vit = D.build("vit", "partshapes", patch=8, prune_at=(1,), keep=(0.25,), criterion="received", **SMALL).eval()
        tr = vit.trace(images, need_masks=False)
        assert tr.kept[1].shape == (3, 4) and tr.masks[1] is not None and tr.masks[0] is None
        rnd = D.build("vit", "partshapes", patch=8, prune_at=(1,), keep=(0.25,), criterion="random", **SMALL).eval()
        torch.manual_seed(1)
        a = rnd.trace(images).kept[1]
        torch.manual_seed(1)
        assert torch.equal(a, rnd.trace(images).kept[1])
        assert not torch.equal(a, rnd.trace(images).kept[1])  # a fresh draw each pass


def test_ablations_remove_the_selector_the_controller_or_later_reversed_blocks():
    torch.manual_seed(0)
    images = torch.rand(2, 1, 32, 32)
    no_ctrl = D.build("dependencyvit", "partshapes", patch=8, controller=False, **SMALL).eval()
    uniform = D.build("dependencyvit", "partshapes", patch=8, selector=False, **SMALL).eval()
    first = D.build("dependencyvit", "partshapes", patch=8, reversed_layers=1, **SMALL).eval()
    full = D.build("dependencyvit", "partshapes", patch=8, **SMALL)
    c, h, depth = SMALL["dim"], SMALL["heads"], SMALL["depth"]
    n_full = sum(p.numel() for p in full.parameters())
    assert n_full - sum(p.numel() for p in no_ctrl.parameters()) == depth * (c * (c // 2) + c // 2 + c // 2 + 1)
    assert n_full - sum(p.numel() for p in uniform.parameters()) == depth * c * h
    assert [b.reversed for b in first.blocks] == [True, False, False]
    with torch.no_grad():
        assert torch.equal(no_ctrl.trace(images).ms[-1], torch.ones(2, 16))
        p, _ = uniform.blocks[0].attn.gates(torch.rand(2, 16, c), torch.ones(2, 16))
        assert torch.allclose(p, torch.full((2, h, 16), 1 / h))
        tr = first.trace(images)
        assert torch.equal(tr.ms[1], tr.ms[0]) and torch.equal(tr.ms[2], tr.ms[0])  # plain blocks pass M on
    with pytest.raises(ValueError, match="reversed_layers"):
        D.build("dependencyvit", reversed_layers=7, **SMALL)


def test_mean_pooling_ignores_m_and_trace_returns_the_final_tokens():
    torch.manual_seed(0)
    images = torch.rand(3, 1, 32, 32)
    weighted = D.build("dependencyvit", "partshapes", patch=8, **SMALL).eval()
    mean = D.build("dependencyvit", "partshapes", patch=8, pool="mean", **SMALL).eval()
    mean.load_state_dict(weighted.state_dict())  # the same weights: pooling has no parameters
    with torch.no_grad():
        tr_w, tr_m = weighted.trace(images), mean.trace(images)
        assert tr_w.tokens.shape == (3, 16, SMALL["dim"]) and torch.equal(tr_w.tokens, tr_m.tokens)
        x = weighted.norm(tr_w.tokens)
        assert torch.allclose(tr_w.logits, weighted.head((x * tr_w.ms[-1].unsqueeze(-1)).mean(1)), atol=1e-6)
        assert torch.allclose(tr_m.logits, mean.head(x.mean(1)), atol=1e-6)
    with pytest.raises(ValueError, match="pool"):
        D.build("dependencyvit", pool="max", **SMALL)


def test_model_free_baselines_features_and_scores():
    images = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    pos = D.patch_features(images, 2, "position")
    assert pos.shape == (2, 4, 2) and pos[0].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    pix = D.patch_features(images, 2, "pixels")
    assert pix.shape == (2, 4, 4) and pix[0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]  # the top-right 2×2 patch
    assert D.patch_features(images, 2, "position + pixels").shape == (2, 4, 6)
    # a 3×3 grid: the left column one object, the right column another, the middle background; position alone
    # separates them exactly
    grid = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    truth = np.tile(np.array([1, 0, 2] * 3), (2, 1))
    assert D.kmeans_ari(grid, truth, 2, 2, "position") == 1.0
    with pytest.raises(ValueError, match="feature"):
        D.patch_features(images, 2, "colour")


# ---------------------------------------------------------------- tree readings and scores


def test_part_labels_heads_are_the_most_received_tokens():
    mask, _ = hand_mask()
    tree, labels = D.part_labels(mask, k=2)
    received = np.asarray(mask).sum(1)
    heads = set(np.argsort(-received, kind="stable")[:2].tolist())
    assert set(labels.tolist()) <= heads | set(tree.roots.tolist())
    assert all(labels[h] == h for h in heads)


def test_random_tree_mask_and_agreement():
    rng = np.random.default_rng(0)
    mask = D.random_tree_mask(10, rng)
    assert mask.shape == (10, 10) and np.all(mask.sum(0) == 1)
    truth = np.array([1, 1, 2, 2, 3, 3, 0, 0, 0, 0])
    fg = truth > 0
    renamed = np.array([7, 7, 5, 5, 9, 9, 1, 2, 3, 4])
    assert D.agreement(renamed, truth, fg) == (1.0, 1.0)  # labels' names do not matter; background is ignored
    null = D.permutation_ari(renamed, truth, fg, rng, n=50)
    assert null.shape == (50,) and null.max() <= 1.0 and null.mean() < 0.5


def test_auroc_and_centre_prior():
    assert D.auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    prior = D.centre_prior(4).reshape(4, 4)
    assert prior[1, 1] == prior[2, 2] == prior.max() and prior[0, 0] == prior.min()


# ---------------------------------------------------------------- PartShapes


@pytest.mark.parametrize("variant", D.VARIANTS)
def test_part_shapes_labels(variant):
    s = D.part_shapes(200, seed=1, variant=variant)
    assert s.x.shape == (200, 1, 32, 32) and s.x.dtype == torch.float32
    assert 0 <= s.x.min() and s.x.max() <= 1
    assert set(s.y.unique().tolist()) == {0, 1, 2, 3}
    assert torch.equal(s.foreground, s.parts > 0)
    patches = D.patch_labels(s.parts)
    assert patches.shape == (200, 8, 8)
    for image in patches:  # every part owns at least one 4×4 patch
        assert set(image.unique().tolist()) == {0, 1, 2, 3}
    # a part is painted flat: one intensity per part (easy) or per object (hard)
    for x, parts in zip(s.x[:20, 0], s.parts[:20]):
        shades = [x[parts == k].unique() for k in (1, 2, 3)]
        assert all(len(sh) == 1 for sh in shades)
        if variant != "easy":
            assert shades[0] == shades[1] == shades[2]
    assert s.imageset().num_classes == 4


def test_part_shapes_are_deterministic():
    a, b, c = D.part_shapes(20, seed=5), D.part_shapes(20, seed=5), D.part_shapes(20, seed=6)
    assert torch.equal(a.x, b.x) and torch.equal(a.parts, b.parts) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_two_objects():
    s = D.two_objects(50, seed=2)
    assert s.x.shape == (50, 1, 48, 48) and s.classes.shape == (50, 2)
    assert torch.all(s.classes[:, 0] != s.classes[:, 1]) and torch.equal(s.y, s.classes[:, 0])
    assert not s.objects[:, :, 24:].eq(1).any() and not s.objects[:, :, :24].eq(2).any()
    for obj in (1, 2):
        patches = D.patch_labels(torch.where(s.objects == obj, s.parts, 0))
        assert all(set(p.unique().tolist()) == {0, 1, 2, 3} for p in patches)
    assert torch.equal(s.x, D.two_objects(50, seed=2).x)


def test_patch_labels_rule():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :2, :1] = 1  # 2 of 4 pixels of the top-left 2×2 patch: half, so foreground
    labels[0, 2:, 2:] = torch.tensor([[1, 2], [2, 0]])  # 3 of 4: part 2 has more pixels
    labels[0, 0, 2] = 3  # 1 of 4: background
    assert D.patch_labels(labels, 2)[0].tolist() == [[1, 0], [0, 2]]


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("kind", ["vit", "dependencyvit"])
@pytest.mark.parametrize("dataset,size,classes", [("fashion_mnist", 28, 10), ("partshapes", 32, 4)])
def test_forward_shapes_and_one_training_step(kind, dataset, size, classes):
    torch.manual_seed(0)
    model = D.build(kind, dataset, patch=4, **SMALL)
    tr = model.eval().trace(torch.rand(2, 1, size, size))
    n = (size // 4) ** 2
    assert tr.logits.shape == (2, classes)
    assert [mask.shape for mask in tr.masks] == [(2, n, n)] * 3
    if dataset == "partshapes":
        images = D.part_shapes(16, seed=0).imageset()
    else:
        images = data.ImageSet(torch.rand(16, 1, 28, 28), torch.arange(16) % 10, tuple("0123456789"), "noise")
    before = copy.deepcopy(model.state_dict())
    history = train.fit(model, images, epochs=1, batch_size=16, optimizer="adamw", lr=1e-3, weight_decay=0.05,
                        device="cpu", progress_bar=False, amp=False)
    assert np.isfinite(history[-1]["train_loss"])
    assert not torch.equal(before["head.weight"], model.state_dict()["head.weight"])
    assert not torch.equal(before["blocks.0.attn.qkv.weight"], model.state_dict()["blocks.0.attn.qkv.weight"])


def test_macs_of_both_models():
    n, c, h, hidden, p, classes = 64, 32, 4, 64, 4, 4
    block = n * c * 3 * c + 2 * n * n * c + n * c * c + 2 * n * c * hidden
    plain = n * c * p * p + 3 * block + c * classes
    controls = n * c * h + n * (c * c // 2 + c // 2)  # head selector and message controller
    example = torch.zeros(1, 1, 32, 32)
    assert D.macs(D.build("vit", "partshapes", **SMALL), example) == plain
    assert D.macs(D.build("dependencyvit", "partshapes", **SMALL), example) == plain + 3 * controls


def test_adjusted_rand_rows_equals_scikit_learn():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    truth = rng.integers(3, size=30)
    rows = np.stack([rng.integers(k, size=30) for k in (1, 2, 3, 5, 8)] + [truth, np.zeros(30, int)])
    got = D.adjusted_rand_rows(rows, truth)
    assert np.allclose(got, [adjusted_rand_score(truth, r) for r in rows])
    single = np.zeros(4, int)
    assert D.adjusted_rand_rows(single[None], single)[0] == adjusted_rand_score(single, single) == 1.0


def test_agreement_equals_scikit_learn():
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(2, 40))
        truth, pred = rng.integers(int(rng.integers(1, 4)), size=n), rng.integers(int(rng.integers(1, 6)), size=n)
        keep = rng.random(n) < 0.8
        keep[:2] = True
        ari, nmi = D.agreement(pred, truth, keep)
        assert np.isclose(ari, adjusted_rand_score(truth[keep], pred[keep]))
        assert np.isclose(nmi, normalized_mutual_info_score(truth[keep], pred[keep]))


def test_shapes_split_seeds_and_prefixes():
    a, b = D.shapes_split("test", 5, "hard"), D.shapes_split("test", 8, "hard")
    assert torch.equal(a.x, b.x[:5]) and torch.equal(a.parts, b.parts[:5])  # the first n are the same whatever n
    train = D.shapes_split("train", 5, "hard")
    assert not torch.equal(train.x, a.x)  # each split its own generator seed
    pair = D.shapes_split("val", 3, "easy", patch=6, objects=2)
    assert pair.x.shape == (3, 1, 48, 48) and set(pair.objects.unique().tolist()) == {0, 1, 2}

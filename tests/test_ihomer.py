"""Unit tests of the 03_ihomer series package (notebooks/03_ihomer/ihomer/): small, exact and fast."""

import math
from collections import Counter

import ihomer
import numpy as np
import pytest
from river import base, metrics

# ------------------------------------------------------------------ Jaccard


def test_jaccard_counts_and_distance_by_hand():
    # columns a, b, c; rows are instances
    Y = np.array([[1, 1, 0],
                  [1, 0, 0],
                  [1, 1, 0],
                  [0, 1, 1],
                  [0, 0, 0]], dtype=bool)
    n11, n1 = ihomer.cooccurrence_counts(Y)
    assert n1.tolist() == [3, 3, 1]
    assert n11[0, 1] == 2 and n11[0, 2] == 0 and n11[1, 2] == 1
    D = ihomer.jaccard_distance_matrix(Y)
    # a,b: n11=2, n10=1, n01=1 -> J = 2/4; a,c: J = 0; b,c: n11=1, n10=2, n01=0 -> J = 1/3
    assert D[0, 1] == pytest.approx(0.5)
    assert D[0, 2] == pytest.approx(1.0)
    assert D[1, 2] == pytest.approx(2 / 3)
    assert np.allclose(D, D.T) and np.all(np.diag(D) == 0)


def test_jaccard_pair_never_on_is_distance_one():
    Y = np.array([[1, 0, 0], [1, 0, 0]], dtype=bool)
    D = ihomer.jaccard_distance_matrix(Y)
    assert D[1, 2] == 1.0 and D[0, 1] == 1.0


def test_cluster_counts_match_batch_counts():
    rng = np.random.default_rng(0)
    Y = rng.random((50, 5)) < 0.4
    c = ihomer.LabelCluster(range(5))
    for y in Y:
        c.update(y)
    assert np.allclose(c.distances(), ihomer.jaccard_distance_matrix(Y))
    assert c.n == 50


# ------------------------------------------------------------------ Hoeffding bound and tests


def test_hoeffding_bound_values():
    assert ihomer.hoeffding_bound(100, 0.9) == pytest.approx(math.sqrt(math.log(1 / 0.9) / 200))
    assert ihomer.hoeffding_bound(200, 0.05) == pytest.approx(math.sqrt(math.log(20) / 400))
    assert ihomer.hoeffding_bound(50, 0.05, value_range=2.0) == pytest.approx(2 * math.sqrt(math.log(20) / 100))
    assert ihomer.hoeffding_bound(0, 0.05) == math.inf
    # shrinks as 1/sqrt(n)
    assert ihomer.hoeffding_bound(400, 0.1) == pytest.approx(ihomer.hoeffding_bound(100, 0.1) / 2)


def test_split_and_aggregate_tests_by_hand():
    # a clear two-group structure: small within, large across
    assert ihomer.split_test(d0=0.1, d1=0.8, d2=0.79, avg=0.5, eps=0.01, tau=0.1)
    # homogeneous distances: (d1 - d0) * |d1 + d0 - 2 avg| is tiny
    assert not ihomer.split_test(d0=0.48, d1=0.52, d2=0.51, avg=0.5, eps=0.01, tau=0.1)
    # a lone pair cannot be split (no second distance)
    assert not ihomer.split_test(d0=0.1, d1=0.9, d2=None, avg=0.5, eps=0.0, tau=0.1)
    # d1 not reliably above d2, and tau not yet above eps
    assert not ihomer.split_test(d0=0.1, d1=0.8, d2=0.79, avg=0.5, eps=0.2, tau=0.1)
    assert ihomer.aggregate_test(child_d1=0.7, child_eps=0.01, parent_d1=0.6, parent_eps=0.02)
    assert not ihomer.aggregate_test(child_d1=0.61, child_eps=0.01, parent_d1=0.6, parent_eps=0.02)


def two_block_labels(n, rng):
    z = rng.random((n, 2)) < 0.5
    return np.repeat(z, 3, axis=1)  # labels 0-2 copy block 0, labels 3-5 copy block 1


def test_odac_splits_two_separated_blocks():
    rng = np.random.default_rng(1)
    odac = ihomer.JaccardODAC(6, n_min=100)
    for y in two_block_labels(300, rng):
        odac.learn_one(y)
    assert sorted(odac.partition()) == [[0, 1, 2], [3, 4, 5]]
    assert odac.events[0][1] == "split" and odac.events[0][0] == 100


def test_odac_does_not_split_independent_labels():
    rng = np.random.default_rng(2)
    odac = ihomer.JaccardODAC(6, n_min=100)
    for y in rng.random((3000, 6)) < 0.5:
        odac.learn_one(y)
    assert odac.partition() == [[0, 1, 2, 3, 4, 5]]
    assert odac.events == []


def test_odac_aggregates_when_a_child_outgrows_its_parent():
    odac = ihomer.JaccardODAC(4, n_min=10)
    root = odac.root
    root.d1, root.eps = 0.3, 0.01
    root.children = (ihomer.LabelCluster([0, 1], root, "0"), ihomer.LabelCluster([2, 3], root, "1"))
    # labels 0 and 1 never together: the child's diameter is 1 > 0.3
    for t in range(10):
        odac.learn_one(np.array([t % 2 == 0, t % 2 == 1, True, True]))
    assert odac.partition() == [[0, 1, 2, 3]]
    assert odac.events[-1][1] == "merge"


# ------------------------------------------------------------------ small-cluster merging


@pytest.mark.parametrize("how", ["distance", "paths"])
def test_merge_small_clusters_is_a_partition(how):
    rng = np.random.default_rng(3)
    L = 11
    labels = rng.permutation(L)
    cuts = [0, 1, 3, 4, 8, 9, 11]
    clusters = [sorted(labels[a:b].tolist()) for a, b in zip(cuts, cuts[1:])]
    kw = ({"distance": ihomer.jaccard_distance_matrix(rng.random((40, L)) < 0.3)} if how == "distance"
          else {"paths": ["00", "010", "011", "10", "110", "111"]})
    merged = ihomer.merge_small_clusters(clusters, 3, **kw)
    flat = [label for c in merged for label in c]
    assert sorted(flat) == list(range(L))  # covers every label, each once
    assert len(flat) == len(set(flat))
    assert all(len(c) >= 3 for c in merged)


def test_merge_prefers_nearest_by_jaccard_and_sibling_by_tree():
    D = np.ones((4, 4)) - np.eye(4)
    D[0, 3] = D[3, 0] = 0.1
    assert ihomer.merge_small_clusters([[0], [1, 2], [3]], 2, distance=D) == [[0, 3], [1, 2]]
    # [0] joins its tree neighbour [1, 2]; [3] is then small and alone, and joins the only cluster left
    assert ihomer.merge_small_clusters([[0], [1, 2], [3]], 2, paths=["00", "01", "1"]) == [[0, 1, 2, 3]]


def test_modal_labelset_size_and_random_partition():
    assert ihomer.modal_labelset_size(Counter({0: 5, 4: 9, 2: 9})) == 2
    rng = np.random.default_rng(0)
    clusters = [[0, 1, 2], [3], [4, 5]]
    rp = ihomer.random_partition_like(clusters, rng)
    assert sorted(len(c) for c in rp) == [1, 2, 3]
    assert sorted(label for c in rp for label in c) == list(range(6))


def test_adjusted_rand_identical_and_permuted():
    truth = [[0, 1], [2, 3]]
    assert ihomer.adjusted_rand([[2, 3], [1, 0]], truth) == 1.0
    assert ihomer.adjusted_rand([[0, 2], [1, 3]], truth) < 0


# ------------------------------------------------------------------ generator


def test_generator_cardinality_and_drift_point():
    s = ihomer.drifting_blocks(40_000, drift_at=20_000, seed=0)
    assert s.Y.shape == (40_000, 16) and s.X.shape == (40_000, 4 * 3 + 8)
    assert s.Y.sum(1).mean() == pytest.approx(s.info["expected_cardinality"], rel=0.02)
    assert s.info["expected_cardinality"] == pytest.approx(16 * (0.35 * 0.95 + 0.65 * 0.02))
    # without label noise every block's labels are identical, under the old blocks before and the new ones after
    clean = ihomer.drifting_blocks(2_000, drift_at=700, p_miss=0.0, p_spurious=0.0, seed=1)
    for blocks, rows in ((clean.info["blocks_before"], slice(0, 700)), (clean.info["blocks_after"], slice(700, None))):
        for block in blocks:
            part = clean.Y[rows][:, block]
            assert (part == part[:, :1]).all()
    old = clean.info["blocks_before"][0]
    assert not (clean.Y[700:][:, old] == clean.Y[700:][:, old[:1]]).all()  # the old block no longer holds
    assert clean.info["blocks_after"] == ihomer.moved_blocks(16, 4)
    assert ihomer.moved_blocks(12, 3) == [[0, 1, 10, 11], [4, 5, 2, 3], [8, 9, 6, 7]]


def test_generator_is_deterministic():
    a, b = ihomer.drifting_blocks(500, seed=3), ihomer.drifting_blocks(500, seed=3)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.Y, b.Y)


# ------------------------------------------------------------------ evaluation


class Spy(base.MultiLabelClassifier):
    def __init__(self):
        self.calls = []

    def predict_one(self, x):
        self.calls.append(("predict", x["i"]))
        return {}

    def learn_one(self, x, y):
        self.calls.append(("learn", x["i"]))


def test_prequential_predicts_before_it_learns():
    s = ihomer.MLStream("t", np.arange(5.0)[:, None], np.zeros((5, 2), dtype=bool), ["i"], ["a", "b"])
    spy = Spy()
    run = ihomer.prequential(spy, s, progress=False)
    assert spy.calls == [(kind, float(i)) for i in range(5) for kind in ("predict", "learn")]
    assert run.P.shape == (5, 2) and not run.P.any()


@pytest.mark.parametrize("empty", [False, True])
def test_scores_match_river_metrics(empty):
    rng = np.random.default_rng(4)
    Y, P = rng.random((60, 5)) < 0.3, rng.random((60, 5)) < 0.4
    if empty:  # a label never on nor predicted, and rows with nothing on nor predicted: F1's 0/0 cases
        Y[:, 4] = P[:, 4] = False
        Y[:10] = P[:10] = False
    river_metrics = {
        "subset_acc": metrics.multioutput.ExactMatch(),
        "micro_f1": metrics.multioutput.MicroAverage(metrics.F1()),
        "macro_f1": metrics.multioutput.MacroAverage(metrics.F1()),
        "example_f1": metrics.multioutput.SampleAverage(metrics.F1()),
        "hamming": metrics.multioutput.MacroAverage(metrics.Accuracy()),
    }
    for y, p in zip(Y, P):
        for m in river_metrics.values():
            m.update(dict(enumerate(y.tolist())), dict(enumerate(p.tolist())))
    ours = ihomer.multilabel_scores(Y, P)
    for k, m in river_metrics.items():
        expected = 1 - m.get() if k == "hamming" else m.get()
        assert ours[k] == pytest.approx(expected), k


def test_rolling_exact_match():
    Y = np.array([[1], [1], [0], [0]], dtype=bool)
    P = np.array([[1], [0], [0], [1]], dtype=bool)
    assert ihomer.rolling_exact_match(Y, P, window=2).tolist() == [1.0, 0.5, 0.5, 0.5]


# ------------------------------------------------------------------ learners


def test_label_combination_predicts_labelsets():
    from river import tree

    lc = ihomer.LabelCombination(tree.HoeffdingTreeClassifier())
    assert lc.predict_one({"f": 0.0}) == {}
    for i in range(20):
        lc.learn_one({"f": float(i % 2)}, {"a": True, "b": i % 2 == 0})
    assert lc.n_labelsets == 2
    assert set(lc.predict_one({"f": 0.0})) == {"a", "b"}


def test_naive_bayes_votes_ignore_classes_seen_once():
    from river.tree.splitter import GaussianSplitter

    splitters = {"f": GaussianSplitter()}
    stats = Counter()
    for v, c in [(0.0, 0), (0.2, 0), (-0.1, 0), (5.0, 1), (5.2, 1), (9.0, 2)]:
        splitters["f"].update(v, c, 1.0)
        stats[c] += 1
    votes = ihomer.naive_bayes_votes({"f": 0.1}, stats, splitters)
    assert set(votes) == {0, 1} and max(votes, key=votes.get) == 0
    assert sum(votes.values()) == pytest.approx(1.0)


def test_ihomer_rebuilds_only_changed_clusters():
    class Null(base.MultiLabelClassifier):
        def learn_one(self, x, y):
            pass

        def predict_one(self, x):
            return {}

    m = ihomer.IHOMER(Null, n_min=50, merge="none", local_drift=False, global_drift=False)
    rng = np.random.default_rng(5)
    Y = two_block_labels(200, rng)
    for y in Y:
        m.learn_one({"f": 0.0}, {f"l{i}": bool(v) for i, v in enumerate(y)})
    assert sorted(m.current_partition()) == [[0, 1, 2], [3, 4, 5]]
    assert m.history[0] == (0, [[0, 1, 2, 3, 4, 5]])
    assert set(m.models) == {(0, 1, 2), (3, 4, 5)}


# ------------------------------------------------------------------ ARFF and the paper profile


def test_load_arff_meka_dense_and_sparse(tmp_path):
    dense = tmp_path / "toy.arff"
    dense.write_text("@relation 'toy: -C 2'\n@attribute A {0,1}\n@attribute B {0,1}\n"
                     "@attribute x numeric\n@attribute c {r,g}\n@data\n1,0,0.5,g\n0,1,-1,r\n1,1,?,?\n")
    s = ihomer.load_arff(dense)
    assert s.label_names == ["A", "B"] and s.feature_names == ["x", "c"]
    assert s.Y.tolist() == [[True, False], [False, True], [True, True]]
    assert s.X.tolist() == [[0.5, 1.0], [-1.0, 0.0], [0.0, 0.0]]  # a missing value is 0
    sparse = tmp_path / "sp.arff"
    sparse.write_text("@relation 'sp: -C -2'\n@attribute x1 numeric\n@attribute x2 numeric\n"
                      "@attribute L1 {0,1}\n@attribute L2 {0,1}\n@data\n{0 2.5,3 1}\n{1 1,2 1}\n")
    s = ihomer.load_arff(sparse)
    assert s.label_names == ["L1", "L2"]
    assert s.X.tolist() == [[2.5, 0.0], [0.0, 1.0]] and s.Y.tolist() == [[False, True], [True, False]]


def test_paper_dataset_missing_names_the_places(tmp_path, monkeypatch):
    from prunebook.data import DatasetNotFoundError

    monkeypatch.delenv("PRUNEBOOK_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError) as err:
        ihomer.find_arff("Emotions", data_root=tmp_path)
    msg = str(err.value)
    assert "emotions.arff" in msg and str(tmp_path) in msg and "uco.es" in msg and "$PRUNEBOOK_DATA (not set)" in msg
    (tmp_path / "multilabel").mkdir()
    (tmp_path / "multilabel" / "Emotions.ARFF").write_text("x")
    assert ihomer.find_arff("Emotions", data_root=tmp_path).name == "Emotions.ARFF"


def test_a_dry_run_cuts_the_datasets_and_streams_but_keeps_their_dimensions(monkeypatch, tmp_path):
    from prunebook.data import DatasetNotFoundError

    names = list(ihomer.PAPER_DATASETS)
    monkeypatch.delenv("PRUNEBOOK_DATA", raising=False)
    monkeypatch.delenv("PRUNEBOOK_DRY_RUN", raising=False)
    assert ihomer.dry_datasets(names) == names and ihomer.dry_stream_length(10_000, 5_000) == (10_000, 5_000)
    with pytest.raises(DatasetNotFoundError):  # without a dry run, a missing file stays an error
        ihomer.paper_dataset("Bibtex", data_root=tmp_path)
    monkeypatch.setenv("PRUNEBOOK_DRY_RUN", "1")
    assert ihomer.dry_datasets(names) == ["Flags", "Yeast", "Imdb"] and ihomer.dry_datasets(["Yeast"]) == ["Yeast"]
    assert ihomer.dry_stream_length(10_000, 5_000) == (200, 100) and ihomer.dry_stream_length(150, 50) == (150, 50)
    bibtex, flags = ihomer.paper_dataset("Bibtex"), ihomer.paper_dataset("Flags")
    assert bibtex.X.shape == (2, 1836) and bibtex.Y.shape == (2, 159)  # wide: the fewest instances
    assert flags.X.shape[1:] == (19,) and flags.Y.shape[1:] == (7,) and 2 < len(flags) <= 200
    assert (flags.Y[::2] == flags.Y[0]).all() and (flags.Y.sum(1) >= 1).all()  # a few instances in turn


# ------------------------------------------------------------------ ranks


def test_average_ranks_friedman_nemenyi():
    table = np.array([[0.9, 0.8, 0.7], [0.6, 0.6, 0.5], [0.3, 0.4, 0.2]])
    assert ihomer.average_ranks(table).tolist() == pytest.approx([(1 + 1.5 + 2) / 3, (2 + 1.5 + 1) / 3, 3.0])
    assert ihomer.average_ranks(table, higher_is_better=False).tolist() == pytest.approx([2.5, 2.5, 1.0])
    # Demsar (2006), Table 5(a): q_0.05 = 2.569 for k = 4 and 3.164 for k = 10
    assert ihomer.nemenyi_cd(4, 1) == pytest.approx(2.569 * math.sqrt(4 * 5 / 6), rel=1e-3)
    assert ihomer.nemenyi_cd(10, 20) == pytest.approx(3.164 * math.sqrt(10 * 11 / 120), rel=1e-3)
    f = ihomer.friedman(np.array([[1, 2, 3]] * 10, dtype=float))
    assert f["chi2"] == pytest.approx(20.0) and f["p_chi2"] < 1e-4


# ------------------------------------------------------------------ label dependence


def test_dependence_statistic_by_hand():
    # two labels, four instances: a on twice, b on twice, together once; independence gives 2 * 2 / 4 = 1
    Y = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], dtype=bool)
    assert ihomer.dependence_statistic(Y) == pytest.approx(0.0)
    Y = np.array([[1, 1], [1, 1], [0, 0], [0, 0]], dtype=bool)  # together twice: |2 - 1| = 1
    assert ihomer.dependence_statistic(Y) == pytest.approx(1.0)


def test_permutation_test_finds_dependence_and_not_independence():
    rng = np.random.default_rng(5)
    dependent = two_block_labels(300, rng)
    independent = rng.random((300, 6)) < 0.5
    d = ihomer.dependence_permutation_test(dependent, n_permutations=199, seed=0)
    i = ihomer.dependence_permutation_test(independent, n_permutations=199, seed=0)
    assert d["p"] == pytest.approx(1 / 200)  # no shuffle comes near copied labels
    assert i["p"] > 0.05
    assert len(d["null"]) == 199


def test_permutation_test_is_reproducible():
    Y = np.random.default_rng(6).random((100, 4)) < 0.3
    a = ihomer.dependence_permutation_test(Y, n_permutations=50, seed=2)
    b = ihomer.dependence_permutation_test(Y, n_permutations=50, seed=2)
    assert a["p"] == b["p"] and np.array_equal(a["null"], b["null"])



def test_label_combination_predicts_the_winning_labelset_where_rivers_encoder_flips_it():
    from river import multioutput, naive_bayes

    ours = ihomer.LabelCombination(naive_bayes.GaussianNB())
    river_lp = multioutput.MultiClassEncoder(naive_bayes.GaussianNB())
    labelsets = [{"a": True, "b": False}, {"a": False, "b": True}, {"a": True, "b": True}]
    for i in range(30):  # three labelsets, equally likely: the winning class has p = 1/3
        ours.learn_one({"x": 1.0}, labelsets[i % 3])
        river_lp.learn_one({"x": 1.0}, labelsets[i % 3])
    assert ours.n_labelsets == 3
    assert ours.predict_one({"x": 1.0}) == labelsets[0]          # the first class wins the tie
    assert river_lp.predict_one({"x": 1.0}) == {"a": False, "b": True}   # labelset 0 with every label flipped


# ------------------------------------------------------------------ stream orders, drift resets, tuning


def test_permuted_keeps_the_instances_and_order_zero_is_the_file_order():
    s = ihomer.drifting_blocks(200, drift_at=None, seed=1)
    assert s.permuted(0) is s
    p, q = s.permuted(3), s.permuted(3)
    assert np.array_equal(p.X, q.X) and not np.array_equal(p.X, s.X)
    rows = sorted(map(tuple, np.c_[s.X, s.Y].round(9).tolist()))
    assert rows == sorted(map(tuple, np.c_[p.X, p.Y].round(9).tolist()))


class _Constant(base.MultiLabelClassifier):
    """Predicts every label off; counts the instances it learnt."""

    def __init__(self):
        self.n = 0

    def learn_one(self, x, y):
        self.n += 1

    def predict_one(self, x, **kwargs):
        return {}


def test_drift_reset_restarts_the_whole_model_on_a_rise_of_its_error():
    m = ihomer.DriftReset(_Constant)
    for t in range(3000):   # labels off (no error), then always on (error 1): ADWIN sees the rise
        m.learn_one({"f": 0.0}, {"a": t >= 1500, "b": False})
    assert m.resets and m.resets[0][1] is None and 1500 < m.resets[0][0] < 1700
    assert m.model.n < 1500


def test_drift_reset_per_label_restarts_only_the_drifting_label():
    from river.multioutput import PerOutputClassifier
    from river.naive_bayes import GaussianNB

    m = ihomer.DriftReset(lambda: PerOutputClassifier(GaussianNB()), per_label=True)
    rng = np.random.default_rng(0)
    for t in range(3000):   # label a flips its relation to the feature at 1500; b never changes
        v = float(rng.random())
        m.learn_one({"f": v}, {"a": (v > 0.5) != (t >= 1500), "b": v > 0.5})
    assert m.resets and {label for _, label in m.resets} == {"a"}


def test_thresholded_regressor_predicts_labels_at_or_above_the_threshold():
    class Fixed:
        def learn_one(self, x, y):
            self.y = y

        def predict_one(self, x):
            return {"a": 0.5, "b": 0.49}

    m = ihomer.ThresholdedRegressor(Fixed())
    m.learn_one({}, {"a": True, "b": False})
    assert m.regressor.y == {"a": 1.0, "b": 0.0}
    assert m.predict_one({}) == {"a": True, "b": False}


def test_tune_n_min_takes_the_smallest_value_that_passes_on_every_tuning_stream(monkeypatch):
    ari = {(100, 7): (0.9, 0.3), (100, 8): (1.0, 1.0), (300, 7): (0.9, 0.7), (300, 8): (1.0, 0.9),
           (500, 7): (1.0, 1.0), (500, 8): (1.0, 1.0)}

    def fake(seed, n, drift_at, n_min, **kw):
        before, after = ari[n_min, seed]
        return {"t": [drift_at, n], "ari": [before, after]}

    monkeypatch.setattr(ihomer.traces, "cached_trace", fake)  # where tune_n_min looks it up
    chosen, rows = ihomer.tune_n_min([100, 300, 500], [7, 8], 1000, 500, 0.8, 0.6)
    assert chosen == 300 and len(rows) == 6
    ari[300, 7] = (0.5, 0.5)
    ari[500, 7] = (0.5, 0.5)   # none passes: the largest mean ARI (100: 0.8, 300: 0.725, 500: 0.75)
    assert ihomer.tune_n_min([100, 300, 500], [7, 8], 1000, 500, 0.8, 0.6)[0] == 100


def test_topic_stream_changes_generator_at_the_drift():
    s = ihomer.topic_stream(400, drift_at=200, seed=3)
    assert s.X.shape == (400, 20) and s.Y.shape == (400, 10)
    from sklearn.datasets import make_multilabel_classification

    X0, Y0 = make_multilabel_classification(n_samples=200, n_features=20, n_classes=10, n_labels=2,
                                            allow_unlabeled=True, random_state=3)
    assert np.array_equal(s.X[:200], X0) and np.array_equal(s.Y[:200], Y0.astype(bool))
    assert not np.array_equal(s.X[200:], X0)
    assert np.array_equal(ihomer.topic_stream(400, drift_at=200, seed=3).Y, s.Y)

"""Neves, Lourenço, Cano & Marreiros, "Online hierarchical partitioning of the output space in extreme multi-label
data streams" (iHOMER, ECAI 2025, arXiv 2507.20894): the method code of the 03_ihomer series.

iHOMER keeps a tree over the *labels* that grows and shrinks online. Its active leaves partition the label space into
disjoint clusters of labels that tend to occur together; one multi-label learner is trained per cluster, and the
prediction for an instance is the union of the clusters' predictions.

The package, one concern a module, in the order the notebooks use them (``import ihomer`` gives every public name):

- ``streams``: :class:`MLStream` (features ``X``, boolean labels ``Y``) from river's bundled Yeast (:func:`yeast`)
  or from :func:`drifting_blocks`, a synthetic stream whose labels come in planted blocks that are reshuffled at a
  drift point; :func:`topic_stream`.
- ``arff``: MEKA/MULAN ARFF files for the ``paper`` profile (:func:`load_arff`, :func:`paper_dataset`);
  :func:`load_stream`.
- ``evaluation``: :func:`prequential` (test-then-train: predict each instance, then learn it),
  :func:`cached_prequential` and :func:`multilabel_scores` (subset accuracy, Hamming loss, micro/macro/example-based
  F1).
- ``dependencies``: :func:`jaccard_distance_matrix` from co-occurrence counts ``n11, n10, n01``;
  :func:`dependence_permutation_test`, a permutation test of label-pair dependence.
- ``clustering``: :class:`JaccardODAC`, the online divisive-agglomerative clustering (ODAC, Rodrigues, Gama &
  Pedroso 2008) run over the label streams with the Jaccard distance; :func:`hoeffding_bound`, :func:`split_test`,
  :func:`aggregate_test`; :func:`merge_small_clusters` grows clusters smaller than the modal labelset size;
  :func:`random_partition_like` for the random-partition control.
- ``learners``: the per-cluster learner, a label-combination Hoeffding tree (:func:`lc_tree`, our simplification of
  the paper's MLHAT), and the baselines (:func:`baselines`, :func:`more_baselines`: river's binary-relevance and
  label-combination learners with the parameters of the paper's baselines; :class:`DriftReset`).
- ``model``: :class:`IHOMER`: one learner per label cluster, rebuilt when the partition changes, with ADWIN drift
  detection on each cluster's error (local) and on the whole model's error (global).
- ``traces``: the label clustering alone over a synthetic stream (:func:`trace_partition`, :func:`cached_trace`,
  :func:`tune_n_min`, :func:`draw_label_tree`).
- ``ranks``: :func:`average_ranks`, :func:`friedman`, :func:`nemenyi_cd`, :func:`plot_cd` for notebook 05.
"""

from .arff import (
    DATA_HOW_TO,
    PAPER_DATASETS,
    dry_datasets,
    dry_stream_length,
    find_arff,
    load_arff,
    load_stream,
    paper_dataset,
)
from .clustering import (
    JaccardODAC,
    LabelCluster,
    adjusted_rand,
    aggregate_test,
    hoeffding_bound,
    merge_small_clusters,
    modal_labelset_size,
    random_partition_like,
    split_test,
)
from .dependencies import (
    cooccurrence_counts,
    dependence_permutation_test,
    dependence_statistic,
    jaccard_distance_matrix,
    jaccard_from_counts,
)
from .evaluation import (
    Run,
    cached_prequential,
    multilabel_scores,
    prediction_vector,
    prequential,
    rolling_exact_match,
)
from .learners import (
    GLOBAL_BASELINES,
    HT_SETTINGS,
    LOCAL_BASELINES,
    DriftReset,
    HoeffdingTreeLC,
    LabelCombination,
    LeafNBA,
    ThresholdedRegressor,
    baselines,
    hoeffding_tree,
    lc_hoeffding_tree,
    lc_tree,
    more_baselines,
    naive_bayes_votes,
    normalize_counts,
)
from .model import IHOMER, NullLearner, ihomer_random
from .ranks import average_ranks, friedman, nemenyi_cd, nemenyi_groups, plot_cd
from .streams import MLStream, block_labels, drifting_blocks, moved_blocks, topic_stream, yeast
from .traces import cached_trace, draw_label_tree, trace_partition, tune_n_min

__all__ = [  # every public name of the modules, as one flat namespace
    'DATA_HOW_TO', 'DriftReset', 'GLOBAL_BASELINES', 'HT_SETTINGS', 'HoeffdingTreeLC', 'IHOMER',
    'JaccardODAC', 'LOCAL_BASELINES', 'LabelCluster', 'LabelCombination', 'LeafNBA', 'MLStream', 'NullLearner',
    'PAPER_DATASETS', 'Run', 'ThresholdedRegressor', 'adjusted_rand', 'aggregate_test', 'average_ranks',
    'baselines', 'block_labels', 'cached_prequential', 'cached_trace', 'cooccurrence_counts',
    'dependence_permutation_test', 'dependence_statistic', 'draw_label_tree', 'drifting_blocks', 'dry_datasets',
    'dry_stream_length', 'find_arff',
    'friedman', 'hoeffding_bound', 'hoeffding_tree', 'ihomer_random', 'jaccard_distance_matrix',
    'jaccard_from_counts', 'lc_hoeffding_tree', 'lc_tree', 'load_arff', 'load_stream', 'merge_small_clusters',
    'modal_labelset_size', 'more_baselines', 'moved_blocks', 'multilabel_scores', 'naive_bayes_votes',
    'nemenyi_cd', 'nemenyi_groups', 'normalize_counts', 'paper_dataset', 'plot_cd', 'prediction_vector',
    'prequential', 'random_partition_like', 'rolling_exact_match', 'split_test', 'topic_stream', 'trace_partition',
    'tune_n_min', 'yeast',
]

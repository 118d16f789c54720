"""Sorscher, Geirhos, Shekhar, Ganguli & Morcos, "Beyond neural scaling laws: beating power law scaling via data
pruning" (NeurIPS 2022): the method code of the 08_data_pruning series.

Two halves.

**The perceptron (notebook 01).** A teacher ``T`` labels Gaussian inputs ``x ~ N(0, I_N)`` by ``y = sign(T·x)``;
``P = alpha N`` examples are drawn, a pruning metric keeps a fraction ``f`` of them (``alpha_prune = f alpha``), and a
student perceptron is trained on what is left to maximum margin. Test error is ``arccos(R) / pi`` with ``R`` the
cosine between student and teacher.

**Scores and pruning on images (notebooks 02–04).** Per-example difficulty scores from short training runs, a
self-supervised prototype metric, and the linear-probe regime in which notebooks 03–04 prune, fit and test.

The package, one concern a module (``import data_pruning as dp`` gives every public name below):

- ``selection``: :func:`keep_indices` (keep the easiest, hardest or a random fraction of a score vector, exact
  counts; high score = hard), :func:`keep_indices_grouped`, :func:`pruned_indices` (draw an original dataset, keep
  a fraction per class or per cluster), :func:`class_balance`.
- ``perceptron``: :func:`teacher_student_data` (the plain generator); :func:`sample_pruned_perceptron` (the same
  experiment vectorised over trials: by rotation invariance the teacher is ``e_1`` and the probe
  ``cos(theta) e_1 + sin(theta) e_2``, so only the two margins of every example are drawn for all ``P`` examples,
  and the other ``N - 2`` coordinates only for the ones kept); :func:`max_margin` (a batched hard-margin SVM
  through the origin, finite Newton on the squared hinge); :func:`simulate_perceptron`.
- ``theory``: :func:`theory_perceptron`, the replica-symmetric theory (the order parameters of the max-margin
  student trained on pruned data, from the saddle-point conditions solved with scipy), :func:`theory_grid`,
  :func:`kept_margins`; :func:`power_law_fit`, :func:`exponential_fit`.
- ``scores``: :func:`el2n`, :func:`grand` (Paul et al. 2021), :func:`forgetting_events` (Toneva et al. 2019),
  :func:`nearest_prototype` (scikit-learn's k-means in a self-supervised embedding; this paper, §5),
  :func:`load_embedding` (and, for a dry run, :func:`stand_in_embedding`); :func:`supervised_scores` trains a few
  short CNN runs and records EL2N, GraNd and forgetting from them (02).
- ``simclr``: :func:`simclr_train` and :func:`embed` train a tiny SimCLR-style contrastive encoder (no labels) and
  embed the images (02; 04 embeds every training image with it, :func:`embed_with`).
- ``pool``: the image pool of notebooks 02 and 04 (:data:`SETUP`, :func:`make_model`, :func:`load_pool`) and its
  cached scores and embedding (:func:`pool_scores`, :func:`pool_embedding`, :func:`embed_with`).
- ``probe``: the linear-probe regime of notebooks 03–04: :func:`whitened_pcs` (fixed features), :func:`fit_probe`
  (a softmax probe fitted to convergence), :func:`early_probe_scores` (EL2N, GraNd and forgetting for that probe)
  and :func:`probe_runs` (prune, fit and test for every seed, through the cache).
"""

from .perceptron import (
    max_margin,
    perceptron_error,
    probe_direction,
    sample_pruned_perceptron,
    simulate_perceptron,
    teacher_student_data,
)
from .pool import MODELS, SETUP, embed_with, load_pool, make_encoder, make_model, pool_embedding, pool_scores
from .probe import (
    PROBE,
    PROBE_KEYS,
    early_probe_scores,
    fit_probe,
    probe_error,
    probe_features,
    probe_runs,
    probe_scores,
    teacher_task,
    whitened_pcs,
)
from .scores import (
    el2n,
    forgetting_events,
    grand,
    kmeans,
    load_embedding,
    nearest_prototype,
    prototype_distance,
    stand_in_embedding,
    supervised_scores,
)
from .selection import KEEPS, STRATEGIES, class_balance, keep_indices, keep_indices_grouped, n_keep, pruned_indices
from .simclr import Encoder, embed, nt_xent, random_resized_crop, simclr_train, ssl_augment
from .theory import (
    KeptMargins,
    TheoryPoint,
    exponential_fit,
    keep_threshold,
    kept_margins,
    power_law_fit,
    theory_grid,
    theory_perceptron,
)

__all__ = [  # every public name of the modules, as one flat namespace
    'Encoder', 'KEEPS', 'KeptMargins', 'MODELS', 'PROBE', 'PROBE_KEYS', 'SETUP', 'STRATEGIES', 'TheoryPoint',
    'class_balance', 'early_probe_scores', 'el2n', 'embed', 'embed_with', 'exponential_fit', 'fit_probe',
    'forgetting_events', 'grand', 'keep_indices', 'keep_indices_grouped', 'keep_threshold', 'kept_margins',
    'kmeans', 'load_embedding', 'load_pool', 'make_encoder', 'make_model', 'max_margin', 'n_keep',
    'nearest_prototype', 'nt_xent', 'perceptron_error', 'pool_embedding', 'pool_scores', 'power_law_fit',
    'probe_direction', 'probe_error', 'probe_features', 'probe_runs', 'probe_scores', 'prototype_distance',
    'pruned_indices', 'random_resized_crop', 'sample_pruned_perceptron', 'simclr_train', 'simulate_perceptron',
    'ssl_augment', 'stand_in_embedding', 'supervised_scores', 'teacher_student_data', 'teacher_task', 'theory_grid',
    'theory_perceptron', 'whitened_pcs',
]

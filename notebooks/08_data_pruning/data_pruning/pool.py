"""The image pool of notebooks 02 and 04: :data:`SETUP` (the pool, its scoring runs and the SimCLR encoder of each
profile), the networks (:func:`make_model`, :func:`make_encoder`), :func:`load_pool`, and the pool's cached scores
(:func:`pool_scores`) and embedding (:func:`pool_embedding`, :func:`embed_with`)."""

from __future__ import annotations

import torch
from prunebook import cache, data, models
from prunebook.config import dry_steps
from prunebook.display import progress
from torch import nn

from .scores import supervised_scores
from .simclr import Encoder, embed, simclr_train

MODELS = ("smallcnn", "smallcnn_half", "resnet18")

# The pool, its scoring runs and the SimCLR encoder of each profile: one table for notebooks 02 and 04, so that
# they share their cache (a change here re-scores the pool for both).
SETUP = {
    "smoke": dict(dataset="fashion_mnist", pool_size=600, model="smallcnn_half", score_runs=2, score_epochs=2,
                  score_epoch=1, grand_examples=None, lr=0.05, batch_size=128, crop_padding=2, flip=True,
                  ssl_epochs=1, ssl_batch=128, ssl_lr=2e-3, ssl_temperature=0.2, k_protos=10),
    "cpu": dict(dataset="fashion_mnist", pool_size=12000, model="smallcnn_half", score_runs=2, score_epochs=10,
                score_epoch=2, grand_examples=None, lr=0.05, batch_size=128, crop_padding=2, flip=True,
                ssl_epochs=12, ssl_batch=256, ssl_lr=2e-3, ssl_temperature=0.2, k_protos=10),
    # paper: a dry run scores 32 stand-in images, fewer than one batch, with the paper's model and batch settings
    # (on one CPU core a ResNet-18 step takes about 8 s on 128 CIFAR images and about a minute on SimCLR's 2 × 512)
    "paper": dict(dataset="cifar10", pool_size=dry_steps(50000, 32), model="resnet18", score_runs=10, score_epochs=20,
                  score_epoch=20, grand_examples=None, lr=0.1, batch_size=128, crop_padding=4, flip=True,
                  ssl_epochs=200, ssl_batch=512, ssl_lr=1e-3, ssl_temperature=0.2, k_protos=10),
}


def make_model(kind: str, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The classifier trained on (pruned) data: prunebook's ``SmallCNN`` (full or half width) for 28×28 images, or
    torchvision's ResNet-18 adapted to 32×32 CIFAR images (3×3 stride-1 first conv, no max-pool)."""
    if kind == "smallcnn":
        return models.SmallCNN(in_channels, num_classes)
    if kind == "smallcnn_half":
        return models.SmallCNN(in_channels, num_classes, widths=(16, 32), hidden=64)
    if kind == "resnet18":
        import torchvision  # only the paper profile's ResNet-18 needs it, and it is slow to import

        net = torchvision.models.resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
        return net
    raise ValueError(f"model={kind!r}; choose one of {MODELS}")


def make_encoder(kind: str, in_channels: int = 1, proj_dim: int = 64) -> Encoder:
    """A SimCLR encoder with the same backbone as :func:`make_model` and a 2-layer projection head."""
    if kind.startswith("smallcnn"):
        net = make_model(kind, num_classes=10, in_channels=in_channels)
        hidden = net.classifier[1].out_features
        net.classifier = net.classifier[:3]  # flatten, linear, ReLU: the representation
        return Encoder(net, hidden, proj_dim)
    if kind == "resnet18":
        net = make_model(kind, num_classes=10, in_channels=in_channels)
        net.fc = nn.Identity()
        return Encoder(net, 512, proj_dim)
    raise ValueError(f"model={kind!r}; choose one of {MODELS}")


def load_pool(dataset: str, pool_size: int, seed: int = 0, data_root: str | None = None, test_size: int = 0):
    """The pool every series experiment draws from (a stratified subset of the training split, chosen by ``seed``)
    and the test set (all of it, or a stratified ``test_size``). CIFAR images are standardised with the pool's
    channel statistics; Fashion-MNIST stays in [0, 1] (its background is 0, like the crops' padding)."""
    if dataset == "fashion_mnist":
        train_set, test_set = data.fashion_mnist("train", data_root), data.fashion_mnist("test", data_root)
    elif dataset in ("cifar10", "cifar100"):
        train_set, test_set = data.cifar(dataset, "train", data_root), data.cifar(dataset, "test", data_root)
    else:
        raise ValueError(f"dataset={dataset!r}; choose 'fashion_mnist', 'cifar10' or 'cifar100'")
    pool = data.stratified_subset(train_set, min(pool_size, len(train_set)), seed)
    if test_size:
        test_set = data.stratified_subset(test_set, test_size, seed)
    if dataset != "fashion_mnist":
        pool, test_set = data.standardize(pool, test_set)
    return pool, test_set


def pool_scores(pool, s: dict, seed: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    """EL2N, GraNd and forgetting for every pool example, from ``s['score_runs']`` short runs (cached per run).
    ``s`` holds the scoring settings (the same dict in every notebook of the series, so they share the cache)."""
    key = {k: s[k] for k in ("dataset", "pool_size", "model", "score_runs", "score_epochs", "score_epoch",
                             "grand_examples", "lr", "batch_size", "crop_padding", "flip")}
    in_channels = pool.x.shape[1]
    return supervised_scores(
        lambda: make_model(s["model"], pool.num_classes, in_channels), pool, runs=s["score_runs"],
        epochs=s["score_epochs"], score_epoch=s["score_epoch"], seed=seed, batch_size=s["batch_size"], lr=s["lr"],
        crop_padding=s["crop_padding"], flip=s["flip"], device=device, grand_examples=s["grand_examples"],
        cache_name="08_data_pruning/scores", cache_config=key)


def pool_embedding(pool, s: dict, seed: int, device: str = "cpu") -> dict:
    """Train the tiny SimCLR encoder on the pool's images (labels unused) and embed them; cached, with the
    encoder's weights (``state``) so that other images can be embedded later (:func:`embed_with`)."""
    key = {k: s[k] for k in ("dataset", "pool_size", "model", "ssl_epochs", "ssl_batch", "ssl_lr",
                             "ssl_temperature")}

    def compute():
        torch.manual_seed(seed)
        enc = make_encoder(s["model"], pool.x.shape[1])
        losses = simclr_train(enc, pool.x, epochs=s["ssl_epochs"], batch_size=s["ssl_batch"], lr=s["ssl_lr"],
                              temperature=s["ssl_temperature"], seed=seed, device=device, progress=progress)
        state = {k: v.cpu() for k, v in enc.state_dict().items()}
        return {"embedding": embed(enc, pool.x, device=device), "losses": losses, "state": state}

    return cache.cached("08_data_pruning/simclr", {**key, "seed": seed}, compute)


def embed_with(state: dict, model: str, x: torch.Tensor, device: str = "cpu") -> torch.Tensor:
    """Embed images ``x`` with a SimCLR encoder saved by :func:`pool_embedding` (its ``state``)."""
    enc = make_encoder(model, x.shape[1])
    enc.load_state_dict(state)
    return embed(enc, x, device=device)

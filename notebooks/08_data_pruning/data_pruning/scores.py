"""Per-example difficulty scores for deep nets (notebook 02): :func:`el2n`, :func:`grand` (Paul et al. 2021),
:func:`forgetting_events` (Toneva et al. 2019), the self-supervised prototype metric :func:`nearest_prototype`
(k-means in an embedding, :func:`kmeans`; this paper, §5), a user-supplied embedding (:func:`load_embedding`), and
:func:`supervised_scores`, which trains a few short runs and records EL2N, GraNd and forgetting from them.

:func:`grand`, which a notebook shows, keeps its text as shown (the ``torch.func`` import inside it included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from prunebook import cache, train
from prunebook.config import dry_run_requested, dry_steps
from sklearn.cluster import KMeans, MiniBatchKMeans
from torch import nn

# Per-example difficulty scores. Convention everywhere: a HIGH score means a HARD example (keep it when keeping
# the hardest). ``keep_indices(score, f, "hard")`` keeps the highest scores, ``"easy"`` the lowest.


def el2n(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """EL2N (Paul et al. 2021): the L2 norm of the error vector ``softmax(logits) - onehot(label)``, per example."""
    p = logits.float().softmax(-1)
    return (p - F.one_hot(labels, p.shape[-1]).float()).norm(dim=-1)


def grand(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128,
          device: str | torch.device = "cpu") -> torch.Tensor:
    """GraNd (Paul et al. 2021): the norm of each example's own gradient of the cross-entropy with respect to every
    parameter, ``|| d loss(x_i, y_i) / d theta ||``, with the network in eval mode (BatchNorm uses its running
    statistics, so examples do not interact). Computed with ``torch.func.vmap`` over a batch."""
    from torch.func import functional_call, grad, vmap

    was_training = model.training
    model.eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, b, xi, yi):
        out = functional_call(model, (p, b), (xi[None],))
        return F.cross_entropy(out.float(), yi[None])

    per_example = vmap(grad(loss_one), in_dims=(None, None, 0, 0))
    norms = []
    for i in range(0, len(x), batch_size):
        g = per_example(params, buffers, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device))
        norms.append(torch.sqrt(sum(t.flatten(1).pow(2).sum(1) for t in g.values())).cpu())
    model.train(was_training)
    return torch.cat(norms)


def forgetting_events(correct: torch.Tensor | np.ndarray, never_learned: float | None = None) -> torch.Tensor:
    """Forgetting events (Toneva et al. 2019) from a ``T×n`` history of whether each example was classified
    correctly at ``T`` successive checks: the number of times it went from correct to wrong.

    Examples never classified correctly get ``never_learned`` (default ``T``, more than any example can have), as
    Toneva et al. rank them as the most forgettable."""
    c = torch.as_tensor(correct).bool()
    events = (c[:-1] & ~c[1:]).sum(0).float()
    if never_learned is None:
        never_learned = float(c.shape[0])
    return torch.where(c.any(0), events, torch.full_like(events, never_learned))


def kmeans(x: torch.Tensor, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means by scikit-learn (k-means++ seeding, ``random_state=seed``): ``KMeans`` up to 200,000 points,
    ``MiniBatchKMeans`` above (ImageNet). Returns ``(centroids k×d, assignment n)``."""
    z = torch.as_tensor(x).double().numpy()
    if len(z) > 200_000:
        km = MiniBatchKMeans(k, random_state=seed, batch_size=8192, n_init=1).fit(z)
    else:
        km = KMeans(k, random_state=seed, n_init=1).fit(z)
    return torch.from_numpy(km.cluster_centers_).float(), torch.from_numpy(km.labels_).long()


def nearest_prototype(embedding: torch.Tensor, k: int, seed: int = 0, cosine: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The self-supervised prototype metric (this paper, §5): cluster the embeddings with k-means (:func:`kmeans`)
    and score each example by its distance to the nearest centroid. Far from every prototype = hard; close = easy
    (redundant). Returns ``(distance, cluster)`` per example; the clusters allow a label-free balance when pruning.

    With ``cosine`` the embeddings are L2-normalised first and the distance is ``1 - cos`` to the (normalised)
    centroid, as in the paper's ImageNet scores; otherwise it is the Euclidean distance."""
    z = F.normalize(embedding.double(), dim=1) if cosine else embedding.double()
    centroids = kmeans(z, k, seed=seed)[0].double()
    if cosine:  # in chunks: ImageNet's 1.28 M × 1,000 similarities would not fit in memory at once
        unit = F.normalize(centroids, dim=1)
        best = [(z[i:i + 65536] @ unit.T).max(1) for i in range(0, len(z), 65536)]
        dist, cluster = 1 - torch.cat([b.values for b in best]), torch.cat([b.indices for b in best])
    else:
        dist, cluster = torch.cdist(z, centroids).min(1)
    return dist.float(), cluster


def prototype_distance(embedding: torch.Tensor, k: int, seed: int = 0, cosine: bool = True) -> torch.Tensor:
    """Just the distances of :func:`nearest_prototype`: the prototype difficulty score (high = hard)."""
    return nearest_prototype(embedding, k, seed, cosine)[0]


def load_embedding(path, n: int | None = None) -> dict[str, torch.Tensor]:
    """A user-supplied embedding: a ``.pt`` / ``.npy`` tensor (N×d, rows in pool order) or a ``.pt`` dict / ``.npz``
    with ``embedding`` (N×d) and optionally ``labels`` (N). Checks the row count against ``n`` when given."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"embedding_path={str(path)!r} is not a file. Give a self-supervised embedding of the pool: an .npz or .pt "
            "with 'embedding' (N×d) and, for ImageNet, 'labels' (N) - for the paper's setting, SwAV ResNet-50 "
            "features of ImageNet's training images in the order of your label file.")
    if path.suffix == ".npz":
        with np.load(path) as f:
            obj = {k: torch.from_numpy(f[k]) for k in f.files}
    elif path.suffix == ".npy":
        obj = {"embedding": torch.from_numpy(np.load(path))}
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        obj = obj if isinstance(obj, dict) else {"embedding": obj}
    if "embedding" not in obj:
        raise ValueError(f"{path} holds {sorted(obj)}; it needs an 'embedding' array (N×d)")
    emb = torch.as_tensor(obj["embedding"]).float().flatten(1)
    if n is not None and len(emb) != n:
        raise ValueError(f"{path} has {len(emb)} rows but the pool has {n} examples; one row per pool example")
    out = {"embedding": emb}
    if "labels" in obj:
        out["labels"] = torch.as_tensor(obj["labels"]).long()
    return out


def stand_in_embedding(path, n: int, dim: int = 2048, num_classes: int = 1000, seed: int = 0) -> Path:
    """For a dry run of the paper profile only: write a random stand-in of the paper's ImageNet embedding to
    ``path`` (an ``.npz`` that :func:`load_embedding` reads): ``n`` rows of ``dim`` features in [0, 1) (SwAV's
    ResNet-50 features: 2,048, non-negative) and a label of ``num_classes`` for each, every class present when
    ``n`` allows. The shapes of the real file, none of its content."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % num_classes)
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, embedding=rng.random((n, dim), dtype=np.float32), labels=labels)
    return path


# ------------------------------------------------------------------------------------- scores from short runs


def supervised_scores(model_fn, train_set, *, runs: int, epochs: int, score_epoch: int, seed: int = 0,
                      batch_size: int = 128, lr: float = 0.05, crop_padding: int = 2, flip: bool = True,
                      device: str = "cpu", grand_examples: int | None = None, cache_name: str | None = None,
                      cache_config: dict | None = None) -> dict[str, torch.Tensor]:
    """Train ``runs`` networks from different initialisations on ``train_set`` for ``epochs`` epochs and score
    every example from them:

    - ``el2n``: EL2N after ``score_epoch`` epochs, averaged over the runs (Paul et al. score early in training);
    - ``grand``: GraNd at the same epoch, averaged over runs (on the first ``grand_examples`` examples if set —
      per-example gradients are the expensive part; the rest are NaN);
    - ``forgetting``: forgetting events over the end-of-epoch checks of every epoch, averaged over runs;
    - ``correct``: the ``runs×epochs×n`` history of correct predictions (for plots);
    - ``el2n_runs``: each run's own EL2N (``runs×n``), to see how noisy one run is.

    Each run is cached separately under ``cache_name`` when given. A dry run of the paper profile trains two runs of
    one epoch each, scores after it and takes GraNd on 16 examples (per-example gradients of a ResNet-18 take about
    0.2 s an example on one CPU core)."""
    if dry_run_requested():
        runs = dry_steps(runs)
        epochs = score_epoch = dry_steps(epochs, 1)
        grand_examples = dry_steps(grand_examples or len(train_set), 16)

    def one_run(r: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed * 1000 + r)
        model = model_fn().to(device)
        record: dict[str, torch.Tensor] = {}
        history = []

        class Score(train.Callback):
            def on_epoch_end(self, state):
                logits = train.predict(state.model, train_set.x, device=device)
                history.append(logits.argmax(1) == train_set.y)
                if state.epoch == score_epoch:
                    record["el2n"] = el2n(logits, train_set.y)
                    m = len(train_set) if grand_examples is None else min(grand_examples, len(train_set))
                    g = torch.full((len(train_set),), float("nan"))
                    g[:m] = grand(state.model, train_set.x[:m], train_set.y[:m], device=device)
                    record["grand"] = g

        train.fit(model, train_set, epochs=epochs, batch_size=batch_size, lr=lr, crop_padding=crop_padding,
                  flip=flip, device=device, seed=seed * 1000 + r, callbacks=[Score()], desc=f"scoring run {r + 1}")
        record["correct"] = torch.stack(history)
        return record

    results = []
    for r in range(runs):
        if cache_name:
            run_key = {**(cache_config or {}), "run": r, "seed": seed}
            results.append(cache.cached(cache_name, run_key, lambda r=r: one_run(r)))
        else:
            results.append(one_run(r))
    correct = torch.stack([res["correct"] for res in results])
    return {
        "el2n": torch.stack([res["el2n"] for res in results]).mean(0),
        "el2n_runs": torch.stack([res["el2n"] for res in results]),
        "grand": torch.stack([res["grand"] for res in results]).mean(0),
        "forgetting": torch.stack([forgetting_events(c) for c in correct]).mean(0),
        "correct": correct,
    }

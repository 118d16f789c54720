import pytest
import torch
from prunebook import data, models, prune, train
from torch import nn


def _blobs(n=200, seed=0):
    """Two well-separated classes of 1×4×4 images: any working loop learns them in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 4, 4, generator=g) * 0.3 + (y.float() * 2 - 1).view(n, 1, 1, 1)
    return data.ImageSet(x, y, ("a", "b"), "blobs")


def _mlp():
    torch.manual_seed(0)
    return models.MLP(16, (8,), 2)


def test_fit_learns_and_is_deterministic():
    ds = _blobs()
    h1 = train.fit(_mlp(), ds, epochs=3, batch_size=32, lr=0.05, seed=1, progress_bar=False)
    h2 = train.fit(_mlp(), ds, epochs=3, batch_size=32, lr=0.05, seed=1, progress_bar=False)
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]
    assert h1[-1]["train_acc"] > 0.95 and h1[-1]["train_loss"] < h1[0]["train_loss"]


def test_a_dry_run_trains_only_the_first_steps_of_the_schedule(monkeypatch):
    ds = _blobs()  # 200 images: 7 batches of 32 an epoch
    full = train.fit(_mlp(), ds, epochs=5, batch_size=32, lr=0.05, progress_bar=False)
    steps = []

    class Count(train.Callback):
        def after_step(self, state):
            steps.append(state.scheduler.get_last_lr()[0])

    monkeypatch.setenv("PRUNEBOOK_DRY_RUN", "1")
    dry = train.fit(_mlp(), ds, epochs=5, batch_size=32, lr=0.05, callbacks=[Count()], progress_bar=False)
    assert len(full) == 5 and len(dry) == 2 and len(steps) == 2
    cosine = train.make_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05), "cosine", 5, 7)
    assert steps[0] == pytest.approx(cosine.lr_lambdas[0](1) * 0.05)  # the paper's 35-step schedule, not 2 steps'


def test_evaluate_and_validation_history():
    ds = _blobs()
    model = _mlp()
    hist = train.fit(model, ds, epochs=2, batch_size=50, lr=0.05, val=_blobs(seed=1), progress_bar=False)
    assert {"val_loss", "val_acc", "train_loss", "lr", "seconds"} <= set(hist[-1])
    assert train.evaluate(model, _blobs(seed=1))["acc"] == pytest.approx(hist[-1]["val_acc"])


class _Interrupt(train.Callback):
    def __init__(self, after_epochs):
        self.after = after_epochs

    def on_epoch_end(self, state):
        if state.epoch == self.after:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    ds = _blobs()
    kwargs = dict(epochs=4, batch_size=32, lr=0.05, seed=3, crop_padding=1, flip=True, progress_bar=False)
    straight = _mlp()
    full = train.fit(straight, ds, **kwargs)

    ckpt = tmp_path / "run.pt"
    resumed = _mlp()
    with pytest.raises(KeyboardInterrupt):
        train.fit(resumed, ds, checkpoint=ckpt, callbacks=[_Interrupt(2)], **kwargs)
    resumed = _mlp()  # a fresh process would rebuild the model
    hist = train.fit(resumed, ds, checkpoint=ckpt, **kwargs)
    assert [r["train_loss"] for r in hist] == [r["train_loss"] for r in full]
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    # a finished checkpoint returns at once, without training
    again = _mlp()
    assert train.fit(again, ds, checkpoint=ckpt, **kwargs) == hist
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), straight.parameters()))


def test_resume_recreates_pruning_masks(tmp_path):
    ds = _blobs()
    model = _mlp()
    prune.global_magnitude(model, 0.5)
    train.fit(model, ds, epochs=1, batch_size=32, lr=0.05, checkpoint=tmp_path / "p.pt", progress_bar=False)
    fresh = _mlp()
    train.fit(fresh, ds, epochs=1, batch_size=32, lr=0.05, checkpoint=tmp_path / "p.pt", progress_bar=False)
    assert prune.sparsity(fresh) == pytest.approx(0.5, abs=1 / 150)
    assert torch.equal(fresh.net[1].weight, model.net[1].weight)


def test_pruned_weights_stay_zero_through_training():
    model = _mlp()
    prune.global_magnitude(model, 0.6)
    before = prune.masks(model)
    train.fit(model, _blobs(), epochs=2, batch_size=16, lr=0.1, weight_decay=1e-3, progress_bar=False)
    for name, mask in before.items():
        module_name, _, param = name.rpartition(".")
        weight = getattr(model.get_submodule(module_name), param)
        assert torch.all(weight[mask == 0] == 0)
    assert prune.sparsity(model) == pytest.approx(0.6, abs=1 / 150)


def test_callbacks_fire_in_order():
    events = []

    class Recorder(train.Callback):
        def on_train_start(self, s): events.append("start")
        def on_epoch_start(self, s): events.append("epoch")
        def after_backward(self, s): events.append("backward")
        def after_step(self, s): events.append(f"step{s.step}")
        def on_epoch_end(self, s): events.append(f"end{s.epoch}")

    train.fit(_mlp(), _blobs(n=64), epochs=2, batch_size=32, progress_bar=False, callbacks=[Recorder()])
    assert events == ["start", "epoch", "backward", "step1", "backward", "step2", "end1",
                      "epoch", "backward", "step3", "backward", "step4", "end2"]


def test_a_callback_can_stop_training():
    class Stop(train.Callback):
        def on_epoch_end(self, s):
            s.stop = True

    hist = train.fit(_mlp(), _blobs(n=64), epochs=5, batch_size=32, progress_bar=False, callbacks=[Stop()])
    assert len(hist) == 1


def _lrs(name, epochs=4, steps=10, **kw):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = train.make_scheduler(opt, name, epochs, steps, **kw)
    out = []
    for _ in range(epochs * steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules():
    step = _lrs("step", milestones=(0.5, 0.75), gamma=0.1)
    assert step[19] == 1.0 and step[20] == pytest.approx(0.1) and step[30] == pytest.approx(0.01)
    cos = _lrs("cosine")
    assert cos[0] == 1.0 and cos[20] == pytest.approx(0.5) and cos[-1] < 0.01
    assert _lrs("constant") == [1.0] * 40
    one = _lrs("onecycle")
    assert max(one) == pytest.approx(1.0, rel=1e-3) and one[0] < 0.1 and one[-1] < 0.01
    with pytest.raises(ValueError, match="choose one of: constant, step, cosine, onecycle"):
        _lrs("linear")


def test_optimizer_names():
    assert isinstance(train.make_optimizer(_mlp(), "adam", lr=1e-3), torch.optim.Adam)
    with pytest.raises(ValueError, match="choose one of: sgd, adam, adamw"):
        train.make_optimizer(_mlp(), "rmsprop")


def test_augment_crop_and_flip_exactly():
    x = torch.arange(2 * 1 * 3 * 3).float().view(2, 1, 3, 3)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(train.augment(x, g), x)  # nothing asked, nothing done
    flipped = train.augment(x, torch.Generator().manual_seed(0), flip=True)
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
    cropped = train.augment(x, torch.Generator().manual_seed(1), crop_padding=1)
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(2):  # each crop is some 3×3 window of the zero-padded image
        windows = [padded[i, :, r:r + 3, c:c + 3] for r in range(3) for c in range(3)]
        assert any(torch.equal(cropped[i], w) for w in windows)
    assert train.augment(torch.zeros(8, 3, 32, 32), g, crop_padding=4, flip=True).shape == (8, 3, 32, 32)


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size=0"):
        train.fit(_mlp(), _blobs(), epochs=1, batch_size=0)


def test_cached_run_stores_the_run_and_drops_its_checkpoint(tmp_cache):
    from prunebook import cache

    ds, calls = _blobs(), []
    key = {"epochs": 2, "lr": 0.05}

    def fit(model, checkpoint):
        calls.append(checkpoint)
        return train.fit(model, ds, epochs=2, batch_size=32, lr=0.05, checkpoint=checkpoint, progress_bar=False)

    def measure(model, history):
        return {"acc": train.evaluate(model, ds)["acc"]}

    first = train.cached_run("demo", key, _mlp, fit, seed=0, measure=measure)
    assert len(calls) == 1 and not calls[0].exists()  # the stored run replaces its resume point
    assert cache.path_for("demo/run", key).exists() and len(first["history"]) == 2
    again = train.cached_run("demo", key, _mlp, fit, seed=0, measure=measure)
    assert len(calls) == 1 and again["acc"] == first["acc"]
    assert all(torch.equal(again["state"][k], v) for k, v in first["state"].items())

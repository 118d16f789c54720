import json

import pytest
import torch
from prunebook import cache


def test_cached_computes_once_per_config(tmp_cache):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3)}

    a = cache.cached("scores", {"seed": 0}, compute)
    b = cache.cached("scores", {"seed": 0}, compute)
    c = cache.cached("scores", {"seed": 1}, compute)
    assert len(calls) == 2
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["x"], c["x"])
    assert cache.path_for("scores", {"seed": 0}).parent == tmp_cache / "scores"


def test_key_is_stable_and_order_free():
    assert cache.key("n", {"a": 1, "b": 2}) == cache.key("n", {"b": 2, "a": 1})
    assert cache.key("n", {"a": 1}) != cache.key("n", {"a": 2}) != cache.key("m", {"a": 2})


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "result.pt"
    cache.save({"old": 1}, target)

    def broken(tmp):
        tmp.write_bytes(b"half a file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.atomic_write(target, broken)
    assert cache.load(target) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.pt"]


def test_save_json_writes_numpy_and_torch_values(tmp_path):
    import numpy as np

    path = cache.save_json({"a": np.float32(0.5), "b": torch.tensor([1, 2])}, tmp_path / "r.json")
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [1, 2]}

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


def test_a_damaged_file_is_named_set_aside_and_recomputed(tmp_cache):
    cache.cached("scores", {"seed": 0}, lambda: {"x": torch.arange(1000)})
    path = cache.path_for("scores", {"seed": 0})
    path.write_bytes(path.read_bytes()[:100])  # cut short, as by a full disk
    with pytest.warns(RuntimeWarning, match=f"damaged cache file {path}.*moved to {path.name}.damaged"):
        again = cache.cached("scores", {"seed": 0}, lambda: {"x": torch.arange(3)})
    assert torch.equal(again["x"], torch.arange(3))
    assert torch.equal(cache.load(path)["x"], torch.arange(3))
    assert path.with_name(path.name + ".damaged").is_file()


def test_load_names_the_file_and_load_intact_starts_over(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"")
    with pytest.raises(cache.DamagedCacheFile, match=str(path)):
        cache.load(path)
    with pytest.warns(RuntimeWarning, match="damaged cache file"):
        assert cache.load_intact(path) is None
    assert not path.exists() and cache.load_intact(path) is None


def test_loads_are_weights_only_where_the_contents_allow(tmp_path, monkeypatch):
    import numpy as np

    seen = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: seen.append(kw["weights_only"]) or real(*a, **kw))
    cache.save({"w": torch.ones(2), "n": 3, "s": "x", "l": [1.0]}, tmp_path / "a.pt")
    assert cache.load(tmp_path / "a.pt")["n"] == 3 and seen == [True]
    cache.save({"a": np.arange(3)}, tmp_path / "b.pt")  # NumPy arrays need the full unpickler
    assert cache.load(tmp_path / "b.pt")["a"].tolist() == [0, 1, 2] and seen[1:] == [True, False]


def test_code_hash_follows_the_code_not_its_comments_or_docstrings(tmp_path):
    module = tmp_path / "method.py"
    module.write_text('"""Doc."""\n\n\ndef f(x):\n    """Square."""\n    return x * x  # the square\n')
    before = cache.code_hash(module)
    module.write_text('"""Another doc."""\n\ndef f(x):\n    # squared\n    return x * x\n')
    assert cache.code_hash(module) == before
    module.write_text('def f(x):\n    return x * x * x\n')
    assert cache.code_hash(module) != before


def test_code_hash_of_a_package_covers_its_modules_but_not_a_labs_checks(tmp_path):
    package = tmp_path / "series"
    package.mkdir()
    (package / "__init__.py").write_text("from .a import f\n")
    (package / "a.py").write_text("def f():\n    return 1\n")
    before = cache.code_hash(package)
    (package / "checks.py").write_text("X = 2\n")
    assert cache.code_hash(package) == before
    (package / "a.py").write_text("def f():\n    return 2\n")
    assert cache.code_hash(package) != before


def test_a_series_cache_key_holds_its_method_code(tmp_path, monkeypatch):
    series = tmp_path / "notebooks" / "99_x"
    series.mkdir(parents=True)
    (series / "method.py").write_text("def f():\n    return 1\n")
    monkeypatch.setattr(cache, "checkout", lambda: tmp_path)
    monkeypatch.setenv("PRUNEBOOK_CACHE", str(tmp_path / "cache"))
    cache.method_hash.cache_clear()
    before = cache.path_for("99_x/run", {"seed": 0})
    (series / "method.py").write_text("def f():\n    return 2\n")
    cache.method_hash.cache_clear()
    assert cache.path_for("99_x/run", {"seed": 0}) != before  # the code changed: recomputed
    assert cache.path_for("no_series/run", {"seed": 0}).parent.name == "no_series"  # no folder: no code part
    cache.method_hash.cache_clear()


def test_method_files_leave_out_a_labs_checks_and_editor_copies(tmp_path):
    (tmp_path / "pkg" / ".ipynb_checkpoints").mkdir(parents=True)
    for name in ("method.py", "checks.py", "pkg/a.py", "pkg/.ipynb_checkpoints/a-checkpoint.py"):
        (tmp_path / name).write_text("X = 1\n")
    assert [p.relative_to(tmp_path).as_posix() for p in cache.method_files(tmp_path)] == ["method.py", "pkg/a.py"]

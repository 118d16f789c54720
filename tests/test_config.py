import pytest
import torch
from prunebook import config
from prunebook.config import ConfigError, resolve

CONFIGS = {
    "smoke": {"epochs": 1, "lr": 0.1, "model": "cnn", "sizes": [10, 20], "augment": False},
    "cpu": {"epochs": 5, "lr": 0.1, "model": "cnn", "sizes": [100, 200], "augment": True},
}


def test_profile_from_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("PRUNEBOOK_PROFILE", "smoke")
    assert resolve(CONFIGS, "cpu", verbose=False).epochs == 5


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("PRUNEBOOK_PROFILE", "smoke")
    assert resolve(CONFIGS, None, verbose=False).profile == "smoke"


def test_default_profile_is_cpu(monkeypatch):
    monkeypatch.delenv("PRUNEBOOK_PROFILE", raising=False)
    assert resolve(CONFIGS, None, verbose=False).profile == "cpu"


def test_unknown_profile_names_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"profile='fast'.*smoke, cpu, paper"):
        resolve(CONFIGS, "fast", verbose=False)


def test_bad_environment_profile_names_the_variable(monkeypatch):
    monkeypatch.setenv("PRUNEBOOK_PROFILE", "gpu")
    with pytest.raises(ConfigError, match="PRUNEBOOK_PROFILE='gpu'"):
        resolve(CONFIGS, None, verbose=False)


def test_profile_the_notebook_lacks():
    with pytest.raises(ConfigError, match="no 'paper' profile; it defines: smoke, cpu"):
        resolve(CONFIGS, "paper", verbose=False)


def test_override_and_none_keeps_profile_value():
    cfg = resolve(CONFIGS, "cpu", verbose=False, epochs=7, lr=None)
    assert (cfg.epochs, cfg.lr) == (7, 0.1)
    assert cfg["epochs"] == 7


def test_unknown_parameter_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown parameter 'epoch'.*epochs, lr, model, sizes, augment"):
        resolve(CONFIGS, "cpu", verbose=False, epoch=3)


@pytest.mark.parametrize("name, value, message", [
    ("epochs", 2.5, "must be an integer"),
    ("epochs", True, "must be an integer"),
    ("lr", "fast", "must be a number"),
    ("augment", 1, "must be True or False"),
    ("sizes", 3, "must be a list"),
    ("model", 3, "must be of type str"),
])
def test_wrong_types_are_refused(name, value, message):
    with pytest.raises(ConfigError, match=f"{name}=.*{message}"):
        resolve(CONFIGS, "cpu", verbose=False, **{name: value})


def test_int_is_accepted_for_a_float_setting():
    cfg = resolve(CONFIGS, "cpu", verbose=False, lr=1)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_choices_are_enforced():
    with pytest.raises(ConfigError, match=r"model='mlp' is not allowed; choose one of: 'cnn', 'resnet'"):
        resolve(CONFIGS, "cpu", verbose=False, choices={"model": ["cnn", "resnet"]}, model="mlp")


def test_bad_seed_and_device():
    with pytest.raises(ConfigError, match="seed=-1"):
        resolve(CONFIGS, "cpu", verbose=False, seed=-1)
    with pytest.raises(ConfigError, match="device='gpu' is not a device"):
        resolve(CONFIGS, "cpu", verbose=False, device="gpu")


def test_auto_device_falls_back_to_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert config.pick_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        config.pick_device("cuda")


def test_resolve_prints_the_configuration(capsys):
    resolve(CONFIGS, "smoke", seed=3)
    out = capsys.readouterr().out
    assert "profile 'smoke'" in out and "seed" in out and "epochs" in out


def test_resolve_seeds_everything():
    resolve(CONFIGS, "cpu", seed=11, verbose=False)
    a = torch.rand(3)
    resolve(CONFIGS, "cpu", seed=11, verbose=False)
    assert torch.equal(a, torch.rand(3))


def test_current_and_key():
    cfg = resolve(CONFIGS, "cpu", seed=1, verbose=False)
    assert config.current() is cfg
    same = resolve(CONFIGS, "cpu", seed=1, verbose=False)
    other = resolve(CONFIGS, "cpu", seed=2, verbose=False)
    assert cfg.key() == same.key() != other.key()
    assert cfg.key("seed") == other.key("seed")


def test_resolve_applies_the_figure_style():
    """Every notebook resolves its configuration first: its figures get the look (plots.use_style) from there."""
    import subprocess
    import sys

    code = ("import matplotlib as mpl, prunebook.config as c; c.resolve({'smoke': {}, 'cpu': {}, 'paper': {}}, "
            "'smoke', verbose=False); assert mpl.rcParams['savefig.dpi'] == 160")
    subprocess.run([sys.executable, "-c", code], check=True)


WITH_PAPER = {**CONFIGS, "paper": {"epochs": 160, "lr": 0.1, "model": "resnet", "sizes": [1, 2], "augment": True}}


def test_dry_run_is_off_unless_asked(monkeypatch):
    monkeypatch.delenv("PRUNEBOOK_DRY_RUN", raising=False)
    cfg = config.resolve(WITH_PAPER, "paper", verbose=False)
    assert cfg.dry_run is False and "dry_run" not in cfg
    assert config.dry_steps(300) == 300
    monkeypatch.setenv("PRUNEBOOK_DRY_RUN", "0")
    assert config.resolve(WITH_PAPER, "paper", verbose=False).dry_run is False


def test_dry_run_of_the_paper_profile(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("PRUNEBOOK_RESULTS_DIR", raising=False)
    monkeypatch.delenv("PRUNEBOOK_FIGURES_DIR", raising=False)
    plain = config.resolve(WITH_PAPER, "paper", verbose=False)
    monkeypatch.setenv("PRUNEBOOK_DRY_RUN", "1")
    cfg = config.resolve(WITH_PAPER, "paper")
    assert cfg.dry_run is True and cfg.profile == "paper"
    assert cfg.key() == plain.key()  # an attribute, not a setting
    assert "DRY RUN" in capsys.readouterr().out
    assert config.dry_steps(300) == config.DRY_STEPS and config.dry_steps(1) == 1 and config.dry_steps(9, 3) == 3
    assert config.dry_grid([0.1, 0.5, 0.9, 0.99]) == [0.1, 0.99] and config.dry_grid([3]) == [3]
    monkeypatch.chdir(tmp_path)
    assert config.output_dir("results", "paper") == tmp_path / "results" / "paper-dry"
    assert config.output_dir("figures", "paper") == tmp_path / "figures" / "paper-dry"


def test_dry_run_cuts_seed_counts_and_nothing_else(monkeypatch):
    """Seeds are repetitions, not the paper's shapes: a dry run runs as many of each count as smoke does (two where
    smoke names none); models and sizes stay."""
    table = {**WITH_PAPER, "paper": {**WITH_PAPER["paper"], "n_seeds": 16, "cnn_seeds": 5, "teacher_seeds": 1,
                                     "tune_seeds": [100, 101, 102], "width": 512}}
    monkeypatch.setenv("PRUNEBOOK_DRY_RUN", "1")
    cfg = config.resolve(table, "paper", n_seeds=9, verbose=False)
    assert (cfg.n_seeds, cfg.cnn_seeds, cfg.teacher_seeds) == (2, 2, 1)
    with_smoke = {**table, "smoke": {**table["smoke"], "n_seeds": 1, "cnn_seeds": 3}}
    cfg = config.resolve(with_smoke, "paper", verbose=False)
    assert (cfg.n_seeds, cfg.cnn_seeds, cfg.teacher_seeds) == (1, 3, 1)
    assert cfg.tune_seeds == [100, 101, 102] and cfg.width == 512 and cfg.epochs == 160
    assert config.dry_grid([0.1, 0.5, 0.9]) == [0.1, 0.9]
    monkeypatch.delenv("PRUNEBOOK_DRY_RUN")
    assert config.resolve(table, "paper", verbose=False).n_seeds == 16
    assert config.dry_grid([0.1, 0.5, 0.9]) == [0.1, 0.5, 0.9]


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_dry_run_of_another_profile_is_refused(monkeypatch, profile):
    monkeypatch.setenv("PRUNEBOOK_DRY_RUN", "1")
    with pytest.raises(config.ConfigError, match="runs the 'paper' profile only"):
        config.resolve(WITH_PAPER, profile, verbose=False)


def test_dry_run_has_its_own_cache_folder(monkeypatch, tmp_path):
    from prunebook import cache

    monkeypatch.setenv("PRUNEBOOK_CACHE", str(tmp_path))
    monkeypatch.delenv("PRUNEBOOK_DRY_RUN", raising=False)
    assert cache.cache_dir() == tmp_path
    monkeypatch.setenv("PRUNEBOOK_DRY_RUN", "1")
    assert cache.cache_dir() == tmp_path / "paper-dry"
    assert cache.path_for("demo", {"a": 1}).parent == tmp_path / "paper-dry" / "demo"

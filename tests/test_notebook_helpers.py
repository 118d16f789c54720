"""plots.savefig, claims and display: what every notebook's last cells rely on."""

import json

import matplotlib.pyplot as plt
import prunebook
import pytest
from prunebook import config, plots

CONFIGS = {"smoke": {"n": 1}, "cpu": {"n": 2}}


def test_savefig_writes_png_and_pdf_under_the_profile(in_series):
    config.resolve(CONFIGS, "cpu", verbose=False)
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    plots.savefig(fig, "fig1_line")
    assert (in_series / "figures" / "cpu" / "fig1_line.png").stat().st_size > 1000
    assert (in_series / "figures" / "cpu" / "fig1_line.pdf").is_file()
    with pytest.raises(ValueError, match="bare name"):
        plots.savefig(fig, "fig1_line.png")
    plt.close(fig)


def test_claims_json_has_the_documented_keys(in_series):
    config.resolve(CONFIGS, "cpu", seed=4, verbose=False)
    claims = prunebook.Claims("01_demo")
    claims.add("a", "accuracy above half", "Table 1", paper=0.9, kind="paper",
               decision=prunebook.claims.exceeds([0.75, 0.74, 0.76], threshold=0.5), faithful=True)
    claims.add("b", "loss below one", "Fig. 2", paper="< 1", measured=1.5, holds=False, kind="check",
               note="too few epochs")
    path = claims.save(metrics={"acc": 0.75})
    assert path == in_series / "results" / "cpu" / "01_demo.json"
    result = json.loads(path.read_text())
    assert {"series", "notebook", "profile", "seed", "wall_s", "versions", "claims", "metrics"} <= set(result)
    assert (result["series"], result["notebook"], result["profile"], result["seed"]) == ("99_test", "01_demo", "cpu", 4)
    assert [c["holds"] for c in result["claims"]] == [True, False]
    assert [c["verdict"] for c in result["claims"]] == ["holds", "fails"]
    assert [c["kind"] for c in result["claims"]] == ["paper", "check"]
    assert set(result["claims"][0]) >= {"id", "kind", "text", "source", "paper", "measured", "verdict", "holds",
                                        "faithful", "unfaithful_because"}
    assert [c["faithful"] for c in result["claims"]] == [True, None]
    assert result["claims"][0]["measured"].startswith("0.75, 95 % CI [0.73, 0.77]")
    table = claims.table()
    assert list(table["verdict"]) == ["holds", "fails"]


def test_smoke_claims_hold_nothing(in_series, capsys):
    config.resolve(CONFIGS, "smoke", verbose=False)
    claims = prunebook.Claims("01_demo")
    claims.add("a", "x", "y", paper=1, measured=1, holds=True, kind="check")
    result = json.loads(claims.save().read_text())
    assert result["claims"][0]["holds"] is None and result["claims"][0]["verdict"] == "smoke"
    assert "proves nothing" in capsys.readouterr().out
    with pytest.raises(ValueError, match="used twice"):
        claims.add("a", "x", "y", paper=1, measured=1, holds=True, kind="check")


def test_show_displays_source():
    code = prunebook.show(prunebook.cache.key)
    assert "def key(" in code.data


def test_progress_can_be_silenced(monkeypatch):
    monkeypatch.setenv("PRUNEBOOK_PROGRESS", "0")
    assert prunebook.progress(range(3)).disable
    monkeypatch.setenv("PRUNEBOOK_PROGRESS", "1")
    assert not prunebook.progress(range(3)).disable
    assert prunebook.progress(range(3), enabled=False).disable


def test_headless_progress_is_plain_lines_on_stdout(monkeypatch, capsys):
    monkeypatch.setenv("PRUNEBOOK_HEADLESS", "1")
    for _ in prunebook.progress(range(4), desc="runs", mininterval=0):
        pass
    out, err = capsys.readouterr()
    assert err == "" and "\r" not in out
    assert out.splitlines()[0].startswith("runs:   0%") and out.splitlines()[-1].startswith("runs: 100%|")


def test_interact_headless_calls_the_function_once_with_starting_values(monkeypatch):
    import ipywidgets as widgets

    monkeypatch.setenv("PRUNEBOOK_HEADLESS", "1")
    calls = []
    out = prunebook.interact(lambda k, metric, n: calls.append((k, metric, n)) or "drawn",
                             k=widgets.IntSlider(value=7, min=0, max=9), metric=["a", "b"], n=3)
    assert calls == [(7, "a", 3)] and out == "drawn"

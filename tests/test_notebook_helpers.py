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


def test_interact_headless_calls_the_function_once_with_starting_values(monkeypatch, capsys):
    import ipywidgets as widgets

    monkeypatch.setenv("PRUNEBOOK_HEADLESS", "1")
    calls = []
    out = prunebook.interact(lambda k, metric, n: calls.append((k, metric, n)) or "drawn",
                             k=widgets.IntSlider(value=7, min=0, max=9), metric=["a", "b"], n=3)
    assert calls == [(7, "a", 3)] and out is None  # nothing for the cell to echo under the figure
    assert "drawn" in capsys.readouterr().out  # what the function returns is shown, as the widget would


def test_interact_returns_nothing_in_a_live_kernel_either(monkeypatch):
    import ipywidgets as widgets

    monkeypatch.delenv("PRUNEBOOK_HEADLESS", raising=False)
    monkeypatch.setattr(prunebook.display, "headless", lambda: False)
    assert prunebook.interact(lambda k: None, k=widgets.IntSlider(value=7, min=0, max=9)) is None


def test_notebook_runs_print_no_kernel_transport_warning(tmp_path, capfd):
    import nbformat
    import papermill

    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1 + 1)")]), tmp_path / "a.ipynb")
    papermill.execute_notebook(str(tmp_path / "a.ipynb"), str(tmp_path / "b.ipynb"), kernel_name="python3",
                               progress_bar=False, kernel_manager_class=prunebook.display.kernel_manager_class())
    assert "TCP" not in capfd.readouterr().err  # the kernel's own stderr is this process's
    assert nbformat.read(tmp_path / "b.ipynb", 4).cells[0].outputs[0]["text"] == "2\n"


def test_seeds_and_mean_draws_a_dot_per_seed_a_line_per_seed_and_each_mean():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, ax = plt.subplots()
    table = pd.DataFrame({"a": [0.1, 0.2, 0.3], "b": [0.2, 0.4, 0.3]}, index=[0, 1, 2])
    prunebook.plots.seeds_and_mean(ax, table, scale=100)
    assert len(ax.lines) == 3  # one line per seed, joining its arms
    assert [len(c.get_offsets()) for c in ax.collections[::2]] == [3, 3]  # a dot per seed, per arm
    means = [c.get_segments()[0][0][1] for c in ax.collections[1::2]]
    assert means == pytest.approx([20.0, 30.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    plt.close(fig)


def test_every_method_a_notebook_shows_is_the_code_that_runs():
    """``prunebook.show(f, ...)`` stores f's source as the cell's output: after an edit of the series module, the
    committed output must show the edited code (a notebook shows what runs)."""
    import inspect
    import re
    from pathlib import Path

    stale = []
    for path in sorted(Path(__file__).resolve().parents[1].glob("notebooks/[0-9][0-9]_*/[0-9][0-9]_*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        names = {}
        for line in "\n".join("".join(c["source"]) for c in cells).splitlines():
            if re.fullmatch(r"(from [\w.]+ )?import [\w, ]+( as \w+)?", line):  # the series module, prunebook's
                exec(line, names)
        for cell in cells:
            shown = re.search(r"prunebook\.show\((.*)\)\s*$", "".join(cell["source"]), re.S)
            if shown:
                source = "\n\n".join(inspect.getsource(obj).rstrip() for obj in eval(f"[{shown.group(1)}]", names))
                stored = [o["data"]["text/plain"] for o in cell["outputs"] if o.get("output_type") == "execute_result"]
                if ["".join(text) for text in stored] != [source]:
                    stale.append(f"{path.parent.name}/{path.name}: prunebook.show({shown.group(1)})")
    assert not stale, "re-run these cells (their output is the method's old source):\n" + "\n".join(stale)

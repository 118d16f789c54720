"""Build the prunebook website: ``python book/build.py`` (what ``make book`` runs).

Writes the Sphinx sources into ``_build/book_src/`` — the top README as the front page, each series' README as
its section intro, every notebook with a note on the profile its stored outputs come from and how to run it, each
series' solved lab (``exercises.ipynb``) after its notebooks and the foundations lab as a section of its own, the
claims dashboard and the figure gallery — then renders them into ``_build/book/`` with the configuration in this
folder. Notebooks are never executed: their committed outputs are the content. Series and notebooks are found by
globbing ``notebooks/NN_name/NN_*.ipynb``, as ``prunebook`` finds them.

    python book/build.py                      the site, in _build/book/index.html
    python book/build.py --screenshots DIR    also the front page and the dashboard as PNG (needs chromium)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html
import http.server
import json
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from prunebook import claims, cli, course, report

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
OUT = ROOT / "_build" / "book"
SRC = ROOT / "_build" / "book_src"
LINK_RE = re.compile(r"(!?)\[([^\]\n]*)\]\(([^()\s]+)\)")
SAVEFIG_RE = re.compile(r"savefig\(\s*[^,()]+,\s*f?[\"']([^\"']+)[\"']")


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


class Sources:
    """The generated source folder: files are written only when their content changed (so Sphinx rebuilds
    only what changed), and whatever was not written this time is removed at the end."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.wanted: set[Path] = set()

    def write(self, rel: str | Path, text: str) -> None:
        path = self.folder / rel
        self.wanted.add(path)
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def copy(self, rel: str | Path, source: Path) -> None:
        path = self.folder / rel
        self.wanted.add(path)
        stat = source.stat()
        if not path.is_file() or path.stat().st_mtime != stat.st_mtime or path.stat().st_size != stat.st_size:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, path)

    def has(self, rel: str | Path) -> bool:
        return self.folder / rel in self.wanted

    def prune(self) -> None:
        for path in sorted(self.folder.rglob("*"), reverse=True):
            if path.is_file() and path not in self.wanted:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


# ---------------------------------------------------------------- pages from the repository


def fix_links(text: str, page: str, src: Sources, root: Path) -> str:
    """Point a Markdown page's relative links at what the site holds: a series folder at its README, a file of
    the repository that is no page (an image, a module) copied beside it; a link to what the site cannot hold
    (a test fixture) keeps its text only."""
    here = Path(page).parent

    def fix(match: re.Match) -> str:
        bang, label, target = match.groups()
        path, _, anchor = target.partition("#")
        if not path or re.match(r"^[a-z][a-z0-9+.-]*:", path) or path.startswith("/"):
            return match.group(0)
        rel = Path(*(here / path).parts)
        try:
            rel = (root / rel).resolve().relative_to(root)
        except ValueError:
            return label
        if (root / rel).is_dir() and src.has(rel / "README.md"):
            return f"{bang}[{label}]({path.rstrip('/')}/README.md{'#' + anchor if anchor else ''})"
        if src.has(rel):
            return match.group(0)
        if (root / rel).is_file() and rel.suffix not in (".md", ".ipynb"):
            src.copy(rel, root / rel)
            return match.group(0)
        if not bang:
            return label
        warn(f"{page}: the image {target} is missing")
        return f"*({label}: image missing)*"

    return LINK_RE.sub(fix, text)


def toctree(entries: list[str], caption: str | None = None, hidden: bool = False) -> str:
    options = (f":caption: {caption}\n" if caption else "") + (":hidden:\n" if hidden else "") + ":maxdepth: 1\n"
    return "\n```{toctree}\n" + options + "\n" + "\n".join(entries) + "\n```\n"


def notebook_title(nb: dict[str, Any], fallback: str) -> str:
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def has_outputs(nb: dict[str, Any]) -> bool:
    return any(cell.get("outputs") for cell in nb["cells"] if cell["cell_type"] == "code")


def run_note(series: str, path: Path, nb: dict[str, Any], root: Path) -> str:
    """The Markdown cell put under a notebook's title: where its outputs come from and how to run it."""
    profile = nb["metadata"].get("papermill", {}).get("parameters", {}).get("profile")
    stem = path.stem
    if not has_outputs(nb):
        warn(f"{path.relative_to(root)} has no stored outputs: its page shows the code only "
             f"(prunebook run {series} --only {stem} --inplace stores them)")
        where = "**No stored outputs yet**: this page shows the code only; run the notebook to see its results."
    elif profile:
        where = f"**The outputs below come from a run at the `{profile}` profile**"
        result = root / "notebooks" / series / "results" / profile / f"{stem}.json"
        if result.is_file():
            r = json.loads(result.read_text())
            device = r.get("versions", {}).get("device")
            where += f" (seed {r.get('seed', 0)}" + (f", device {device})" if device else ")")
            tally = claims.summary(r["claims"])
            where += f". {tally[0].upper()}{tally[1:]}: see the [claims dashboard](../../dashboard.md)."
        else:
            where += "."
    else:
        where = "**The outputs below come from a run whose profile is not recorded.**"
    return (f"```{{admonition}} Stored outputs, and how to run this notebook\n:class: note\n\n{where}\n\n"
            f"**Run it**: `prunebook run {series} --only {stem} --profile cpu` (`--profile smoke` for a quick pass, "
            f"`--profile paper` at the paper's scale; the executed copy goes to `runs/`, `--inplace` writes it over "
            f"this notebook). "
            f"**Open it in JupyterLab**: `make lab`, then `{series}/{path.name}` "
            f"([link](http://localhost:8888/lab/tree/{series}/{path.name}) while JupyterLab runs).\n```\n")


def lab_note(lab: str, nb: dict[str, Any]) -> str:
    """The Markdown cell put under a lab's title: it is the solved lab, where its outputs come from, how to run it
    and how to make the students' copies."""
    profile = nb["metadata"].get("papermill", {}).get("parameters", {}).get("profile")
    if not profile:  # a run with the default profile: the configuration cell prints it
        printed = "".join("".join(out.get("text", "")) for cell in nb["cells"] if cell["cell_type"] == "code"
                          for out in cell.get("outputs", []) if out.get("output_type") == "stream")
        match = re.search(r"^profile '(\w+)'", printed, re.M)
        profile = match.group(1) if match else None
    where = (f"the outputs of a run at the `{profile}` profile" if has_outputs(nb) and profile else
             "its stored outputs" if has_outputs(nb) else "no stored outputs yet")
    number = lab[:2]
    return (f"```{{admonition}} The solved lab, and how to teach with it\n:class: note\n\n"
            f"**This page is the solved lab** (the source of truth): every exercise with its solution, and {where}. "
            f"Each `course.check` cell compares the function above it with the series' own code on fresh random "
            f"cases (the lab folder's `checks.py`).\n\n"
            f"**Students' copies**: `prunebook course build --series {number}` writes the handout without solutions, "
            f"instructor notes or the outputs that give answers away. **Grading**: `prunebook course grade "
            f"SUBMISSIONS --seed S --lab {number}`. **Run it**: open `{lab}/exercises.ipynb` in JupyterLab (`make "
            f"lab`), or `papermill exercises.ipynb out.ipynb` in `notebooks/{lab}/`. The foundations lab's page "
            f"(`00_pruning_basics`) explains the format, the handouts and the grader.\n```\n")


def _page_notebook(src: Sources, root: Path, path: Path, note: str) -> None:
    nb = json.loads(path.read_text())
    cell = {"cell_type": "markdown", "id": "prunebook-run-note", "metadata": {}, "source": note}
    nb["cells"].insert(1 if nb["cells"] and nb["cells"][0]["cell_type"] == "markdown" else 0, cell)
    nb["nbformat_minor"] = max(nb.get("nbformat_minor", 0), 5)  # cell ids, which nbformat now expects
    for i, c in enumerate(nb["cells"]):
        c.setdefault("id", f"cell-{i}")
    src.write(path.relative_to(root), json.dumps(nb))


def add_series(src: Sources, root: Path, series: str, notebooks: list[Path], lab: Path | None = None) -> None:
    """A series' section: its README, its notebooks and, when it has one, its lab (``exercises.ipynb``) last. A
    folder with a lab and no series notebooks (the foundations lab) is a section of its own the same way."""
    folder = root / "notebooks" / series
    skip = {"smoke", "__pycache__", ".ipynb_checkpoints"}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not skip & set(rel.parts) and path.suffix not in (".md", ".ipynb"):
            src.copy(rel, path)
    for path in notebooks:
        _page_notebook(src, root, path, run_note(series, path, json.loads(path.read_text()), root))
    if lab is not None:
        _page_notebook(src, root, lab, lab_note(series, json.loads(lab.read_text())))
    readme = folder / "README.md"
    text = readme.read_text() if readme.is_file() else f"# {series}\n"
    page = f"notebooks/{series}/README.md"
    pages = [p.stem for p in notebooks] + ([lab.stem] if lab is not None else [])
    src.write(page, fix_links(text, page, src, root) + toctree(pages, hidden=True))


# ---------------------------------------------------------------- the dashboard


def _value(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.4g}"
    return html.escape(str(value)).replace("\n", "<br>")


def _verdict(claim: dict[str, Any]) -> str:
    verdict = claim["verdict"]
    return f'<td class="verdict verdict-{verdict}">{verdict}</td>'


def _claims_table(rows: list[tuple[dict[str, Any], dict[str, Any]]], links: dict[tuple[str, str], str],
                  with_series: bool) -> str:
    head = ["notebook", "kind", "claim", "source", "paper", "measured", "verdict", "faithful"]
    out = ['<table class="claims list"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for r, c in rows:
        href = links.get((r["series"], r["notebook"]))
        name = html.escape(f"{r['series']} / {r['notebook']}" if with_series else r["notebook"])
        notebook = f'<a href="{href}">{name}</a>' if href else name
        notebook += f'<br><span class="profile">{r["profile"]}</span>'
        kind = c.get("kind", "paper")
        cells = [notebook, kind, *(_value(c[k]) for k in ("text", "source", "paper", "measured"))]
        out.append(f'<tr class="kind-{kind}">' + "".join(f"<td>{v}</td>" for v in cells) + _verdict(c)
                   + f"<td>{_value(report.faithful_cell(c))}</td></tr>")
    return "\n".join(out) + "\n</tbody></table>\n"


def _counts_table(counts: list[dict[str, Any]], series: dict[str, list[Path]]) -> str:
    head = ["profile", "series", *(heading for _, heading in report.COUNT_COLUMNS)]
    out = ['<table class="claims" id="counts"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for row in counts:
        name = row["series"]
        cell = f'<a href="notebooks/{name}/README.html">{name}</a>' if name in series else f"<strong>{name}</strong>"
        values = [row[k] for k, _ in report.COUNT_COLUMNS]
        out.append(f"<tr><td>{row['profile']}</td><td>{cell}</td>"
                   + "".join(f'<td class="num">{v}</td>' for v in values) + "</tr>")
    return "\n".join(out) + "\n</tbody></table>\n"


def dashboard(root: Path, series: dict[str, list[Path]]) -> str:
    """The claims dashboard (Markdown with HTML tables), from the same functions as ``prunebook report``."""
    results = report.read_results(root)
    counts = report.count_rows(results)
    rows = [(r, c) for r, c in report.claim_rows(results) if r["profile"] != "smoke"]
    links = {(s, nb.stem): f"notebooks/{s}/{nb.stem}.html" for s, nbs in series.items() for nb in nbs}
    failing = [(r, c) for r, c in rows if claims.group_of(c) == "paper" and c["verdict"] == "fails"]
    unfaithful = [(r, c) for r, c in rows if claims.group_of(c) == "unfaithful"]
    text = ["# Claims dashboard\n",
            "Every claim the notebooks decide, from their results files (`notebooks/<series>/results/<profile>/`), "
            "counted as `prunebook report` counts them. *paper* claims are what the papers state; *control* (our "
            "controls and null models) and *check* (identities, counts, recomputations) are counted apart. One "
            "rule decides every verdict: a 95 % confidence interval over paired seeds on the paper's side of zero "
            "(`holds`), on the other side (`fails`), or across it (`inconclusive`); a claim over several "
            "conditions fails only after a Holm correction over them. A verdict speaks about the paper only when "
            "its test is **faithful**: the paper's procedure or official code, in the regime the claim covers, able "
            "to go either way. The headline counts faithful paper claims; the others are listed apart with the "
            "reason. Runs at the `smoke` profile prove nothing and are left out.\n",
            "## Claims per series\n",
            _counts_table(counts, series) if counts else "No results yet: run `prunebook run --profile cpu`.\n",
            f"## Failing paper claims with a faithful test ({len(failing)})\n",
            _claims_table(failing, links, True) if failing else "No faithful paper claim fails.\n",
            f"## Paper claims whose test is not faithful ({len(unfaithful)})\n",
            "Their verdicts speak about our reconstruction, not about the paper; the last column says why.\n",
            _claims_table(unfaithful, links, True) if unfaithful else "None.\n",
            "## Every claim\n"]
    for name in series:
        mine = [(r, c) for r, c in rows if r["series"] == name]
        text.append(f"### {name}\n\n[The series](notebooks/{name}/README.md).\n")
        text.append(_claims_table(mine, links, False) if mine else "No results yet.\n")
    return "\n".join(text)


# ---------------------------------------------------------------- the gallery


def figure_owners(notebooks: list[Path]) -> dict[str, list[Path]]:
    """Figure-name pattern → the notebooks whose code saves a figure under that name."""
    owners: dict[str, list[Path]] = {}
    for path in notebooks:
        code = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        for name in SAVEFIG_RE.findall(code):
            pattern = "^" + re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(name)) + "$"
            owners.setdefault(pattern, []).append(path)
    return owners


def gallery(src: Sources, root: Path, series: dict[str, list[Path]]) -> str:
    text = ["# Figure gallery\n", "Every figure the notebooks saved at the `cpu` profile, by series; a caption names "
            "the notebook that draws it. Each is also saved as PDF.\n"]
    for name, notebooks in series.items():
        figures = sorted((root / "notebooks" / name / "figures" / "cpu").glob("*.png"))
        if not figures:
            continue
        titles = {p: notebook_title(json.loads(p.read_text()), p.stem) for p in notebooks}
        owners = figure_owners(notebooks)
        text.append(f"## {name}\n\n[The series](notebooks/{name}/README.md).\n\n````{{container}} gallery\n")
        for png in figures:
            rel = png.relative_to(root)
            src.copy(rel, png)
            found = {p for pattern, ps in owners.items() if re.match(pattern, png.stem) for p in ps}
            caption = f"**{name}**"
            if len(found) == 1:
                nb = found.pop()
                caption += f" · [{titles[nb]}](notebooks/{name}/{nb.name})"
            caption += f" · `{png.stem}`"
            if png.with_suffix(".pdf").is_file():
                src.copy(rel.with_suffix(".pdf"), png.with_suffix(".pdf"))
                caption += f" ([PDF]({rel.with_suffix('.pdf').as_posix()}))"
            text.append(f"```{{figure}} {rel.as_posix()}\n:alt: {png.stem}\n\n{caption}\n```\n")
        text.append("````\n")
    return "\n".join(text)


# ---------------------------------------------------------------- putting it together


def write_sources(root: Path = ROOT, folder: Path = SRC) -> Sources:
    src = Sources(folder)
    series = cli.all_series(root)
    labs = course.repo_labs(root)  # folder name → its solved lab, exercises.ipynb
    for name, notebooks in series.items():
        add_series(src, root, name, notebooks, labs.get(name))
    foundations = [name for name in labs if name not in series]  # labs before the series (00_pruning_basics)
    for name in foundations:  # after the series: their READMEs link into the series' labs
        add_series(src, root, name, [], labs[name])
    index = root / "notebooks" / "README.md"
    if index.is_file():
        src.write("notebooks/README.md", fix_links(index.read_text(), "notebooks/README.md", src, root))
    src.write("dashboard.md", dashboard(root, series))
    src.write("gallery.md", gallery(src, root, series))
    front = (root / "README.md").read_text() if (root / "README.md").is_file() else "# prunebook\n"
    pages = [f"notebooks/{name}/README" for name in series]
    across = ["dashboard", "gallery"] + ["notebooks/README"] * index.is_file()
    course_pages = [f"notebooks/{name}/README" for name in foundations]
    src.write("index.md", fix_links(front, "README.md", src, root)
              + (toctree(course_pages, "Course", hidden=True) if course_pages else "")
              + toctree(pages, "Series", hidden=True) + toctree(across, "Across the series", hidden=True))
    src.prune()
    return src


def build(out: Path = OUT, root: Path = ROOT, folder: Path = SRC, jobs: str = "1", fresh: bool = False) -> None:
    """Write the sources, then run Sphinx; it re-renders only what changed unless ``fresh`` (after an edit of
    this folder's configuration or style, say)."""
    from sphinx.cmd.build import build_main

    t0 = time.time()
    write_sources(root, folder)
    with warnings.catch_warnings():  # the theme's and MyST's deprecation notices are not the reader's concern
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        code = build_main(["-b", "html", "-q", "-j", jobs, *["-E", "-a"] * fresh, "-c", str(BOOK), str(folder),
                           str(out)])
    if code:
        raise SystemExit(f"sphinx-build failed (exit {code})")
    print(f"the site is in {out.relative_to(root) if out.is_relative_to(root) else out}/index.html "
          f"({time.time() - t0:.0f} s)")


# ---------------------------------------------------------------- a real browser (tests, screenshots)

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000"]


@contextlib.contextmanager
def serve(folder: Path):
    """The folder over HTTP on a free local port; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def chromium(binary: str = "/usr/bin/chromium", driver: str = "/usr/bin/chromedriver"):
    """Headless Debian chromium through selenium and the system chromedriver (nothing is downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="prunebook-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
        browser.set_page_load_timeout(60)
        try:
            yield browser
        finally:
            browser.quit()


def screenshots(out: Path, folder: Path) -> list[Path]:
    """The front page and the dashboard, as a reader's browser window shows them."""
    folder.mkdir(parents=True, exist_ok=True)
    shots = []
    with serve(out) as base, chromium() as browser:
        browser.set_window_size(1400, 1200)
        for page, name in (("index.html", "front.png"), ("dashboard.html", "dashboard.png")):
            browser.get(base + page)
            shots.append(folder / name)
            browser.save_screenshot(str(shots[-1]))
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the prunebook website with Sphinx.")
    parser.add_argument("--out", type=Path, default=OUT, help="where the HTML goes (default _build/book)")
    parser.add_argument("--jobs", default="1", help="sphinx-build's -j (default 1)")
    parser.add_argument("--fresh", action="store_true", help="render every page again, not only what changed")
    parser.add_argument("--screenshots", type=Path, metavar="DIR",
                        help="also save front.png and dashboard.png into DIR (needs chromium and chromedriver)")
    args = parser.parse_args(argv)
    build(args.out.resolve(), jobs=args.jobs, fresh=args.fresh)
    if args.screenshots:
        for path in screenshots(args.out.resolve(), args.screenshots):
            print(f"screenshot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

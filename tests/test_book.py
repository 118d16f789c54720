"""The website, as a reader sees it: `make book`'s build, opened in headless chromium."""

import importlib.util
import re
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from prunebook import claims, cli, course, report

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "book"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

no_sphinx = [name for name in ("sphinx", "myst_nb", "sphinx_book_theme") if not importlib.util.find_spec(name)]
no_browser = [name for name in ("selenium",) if not importlib.util.find_spec(name)]
no_browser += [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
needs_sphinx = pytest.mark.skipif(bool(no_sphinx), reason=f"building the website needs {', '.join(no_sphinx)} "
                                  "(pip install -e '.[dev]')")
needs_browser = pytest.mark.skipif(bool(no_sphinx + no_browser), reason="the website test needs "
                                   f"{', '.join(no_sphinx + no_browser)} (pip install -e '.[dev]'; "
                                   "apt-get install chromium chromium-driver)")


def load_build():
    """book/build.py as a module (under its own name: `build` is also a package on PyPI)."""
    spec = importlib.util.spec_from_file_location("prunebook_book_build", ROOT / "book" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@needs_sphinx
def test_a_new_series_without_outputs_is_picked_up_with_a_warning(tmp_path, capsys):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "tests" / "fixtures" / "demo_series", repo, ignore=shutil.ignore_patterns("runs"))
    shutil.copytree(repo / "notebooks" / "00_demo", repo / "notebooks" / "09_new")
    load_build().build(tmp_path / "out", root=repo, folder=tmp_path / "src")
    err = capsys.readouterr().err
    for series in ("00_demo", "09_new"):
        assert f"warning: notebooks/{series}/01_demo.ipynb has no stored outputs" in err
        page = re.sub(r"<[^>]+>", "", (tmp_path / "out" / "notebooks" / series / "01_demo.html").read_text())
        assert "No stored outputs yet" in page and f"prunebook run {series} --only 01_demo" in page
        assert f'href="notebooks/{series}/README.html"' in (tmp_path / "out" / "index.html").read_text()
    assert (tmp_path / "out" / "dashboard.html").is_file() and (tmp_path / "out" / "gallery.html").is_file()


@pytest.fixture(scope="module")
def book():
    module = load_build()
    t0 = time.time()
    module.build(OUT, fresh=True)
    print(f"built in {time.time() - t0:.1f} s")
    return module


def page_report(browser, base: str, page: str) -> dict:
    """Load one page; its severe console entries, images that did not load, and internal links to no file."""
    browser.get(base + page)
    images = browser.execute_script(
        "return [...document.images].map(i => [i.currentSrc || i.src, i.complete && i.naturalWidth > 0])")
    links = browser.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)")
    math = browser.execute_script("return document.querySelectorAll('.math').length")
    for _ in range(100):  # MathJax (from the site itself, no network) typesets the page's equations
        if not math or browser.execute_script("return document.querySelectorAll('mjx-container').length"):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"{page}: MathJax typeset none of its {math} equations")
    broken = set()
    for link in links:
        url = urlsplit(link)
        if f"{url.scheme}://{url.netloc}/" != base or not url.path:
            continue
        target = OUT / unquote(url.path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.add(link)
    return {"severe": [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"],
            "images": len(images), "not loaded": [src for src, ok in images if not ok], "links": len(links),
            "broken links": sorted(broken)}


@needs_browser
def test_the_site_in_a_browser(book):
    series = cli.all_series(ROOT)
    pages = ["index.html", "dashboard.html", "gallery.html"] + [f"notebooks/{s}/README.html" for s in series]
    pages += [f"notebooks/{s}/{nbs[0].stem}.html" for s, nbs in series.items()]
    labs = course.repo_labs(ROOT)  # each solved lab on its series' pages; the foundations lab a section of its own
    pages += [f"notebooks/{lab}/exercises.html" for lab in labs]
    pages += [f"notebooks/{lab}/README.html" for lab in labs if lab not in series]
    with book.serve(OUT) as base, book.chromium() as browser:
        browser.set_window_size(1400, 1000)
        for page in pages:
            page_seen = page_report(browser, base, page)
            assert not page_seen["severe"], (page, page_seen)
            assert not page_seen["not loaded"], (page, page_seen)
            assert not page_seen["broken links"], (page, page_seen)
            assert page_seen["links"] > 10, (page, page_seen)  # the navigation at least
        for lab in labs:  # the solved lab, with its note for instructors and its checks' outputs
            browser.get(base + f"notebooks/{lab}/exercises.html")
            text = browser.execute_script("return document.body.innerText")
            assert "This page is the solved lab" in text and f"prunebook course build --series {lab[:2]}" in text
            assert f"{lab[:2]}.1 passed" in text
        assert page_report(browser, base, "gallery.html")["images"] >= len(list(
            ROOT.glob("notebooks/*/figures/cpu/*.png")))

        # the dashboard counts what `prunebook report` counts, row for row
        browser.get(base + "dashboard.html")
        shown = browser.execute_script(
            "return [...document.querySelectorAll('#counts tbody tr')].map(r => [...r.cells].map(c => c.innerText))")
        results = report.read_results(ROOT)
        expected = [[row["profile"], row["series"], *(str(row[k]) for k, _ in report.COUNT_COLUMNS)]
                    for row in report.count_rows(results)]
        assert [[cell.strip() for cell in row] for row in shown] == expected
        counts = report.report_markdown(results).split("\n| profile | series |", 1)[1]  # the counts, after the claims
        report_rows = [line.strip("|").split(" | ") for line in counts.splitlines()[2:] if line.startswith("| ")]
        assert [[c.strip().strip("*") for c in row] for row in report_rows] == expected
        shown_rows = [(r, c) for r, c in report.claim_rows(results) if r["profile"] != "smoke"]
        failing = [c for r, c in shown_rows if claims.group_of(c) == "paper" and c["verdict"] == "fails"]
        unfaithful = [c for r, c in shown_rows if claims.group_of(c) == "unfaithful"]
        every_fail = [c for r, c in shown_rows if c["verdict"] == "fails"]
        shown_failing = browser.execute_script("return document.querySelectorAll('td.verdict-fails').length")
        # each failing claim in its series' table; the faithful ones again at the top, the unfaithful in their list
        unfaithful_failing = sum(c["verdict"] == "fails" for c in unfaithful)
        assert shown_failing == len(every_fail) + len(failing) + unfaithful_failing
        headings = browser.execute_script("return [...document.querySelectorAll('article h2')].map(h => h.innerText)")
        assert f"Failing paper claims with a faithful test ({len(failing)})" in headings[:2]  # near the top
        assert f"Paper claims whose test is not faithful ({len(unfaithful)})" in headings[:3]

    for shot in book.screenshots(OUT, OUT / "screenshots"):  # the front page and the dashboard, for a look
        assert shot.stat().st_size > 10_000

"""Settings for every pytest run, set before any notebook kernel starts: nbval runs notebooks at `smoke`,
whether pytest was given tests/, notebooks/ or one notebook."""

import os

os.environ["PRUNEBOOK_PROFILE"] = "smoke"
os.environ["PRUNEBOOK_HEADLESS"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(items):
    """The paper dry run (tests/test_dry_run.py, the longest test by far) first, so that under ``make test``'s
    ``-n 2 --dist loadfile --no-loadscope-reorder`` one worker starts it at once while the other runs everything
    else (xdist's default order, the files with most tests first, starts it only when most of the suite is done)."""
    items.sort(key=lambda item: item.path.name != "test_dry_run.py")

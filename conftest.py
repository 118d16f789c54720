"""Settings for every pytest run, set before any notebook kernel starts: nbval runs notebooks at `smoke`,
whether pytest was given tests/, notebooks/ or one notebook."""

import os

os.environ["PRUNEBOOK_PROFILE"] = "smoke"
os.environ["PRUNEBOOK_HEADLESS"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(items):
    """The paper dry run (tests/test_dry_run.py, the longest test by far) first, so that under ``-n 2 --dist
    loadfile`` one worker starts it at once while the other runs everything else; last, it would start only when
    half the suite is done."""
    items.sort(key=lambda item: item.path.name != "test_dry_run.py")

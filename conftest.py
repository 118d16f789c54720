"""Settings for every pytest run, set before any notebook kernel starts: nbval runs notebooks at `smoke`,
whether pytest was given tests/, notebooks/ or one notebook."""

import os

os.environ["PRUNEBOOK_PROFILE"] = "smoke"
os.environ["PRUNEBOOK_HEADLESS"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

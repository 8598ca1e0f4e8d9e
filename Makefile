# Two commands for users (see README): `make figures` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: venv figures sweeps test test-slow bench smoke clean-cache

venv: $(STAMP)

# The pinned requirements, then `common` itself, editable (pyproject.toml): every script imports it as a package.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -qq --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

# Execute every notebook top to bottom with its default parameters: writes Figs/*.png and results/*.json, then the
# README's summary table from them. Online, the theory notebooks use CelebA as the paper; offline, the LFW stand-in.
figures: $(STAMP)
	$(PY) -m common.cli.notebooks
	$(PY) -m common.cli.summary --write README.md

# Opt-in (about 3 h 30 min on 2 cores): the EDM and DiT testbeds retrained at 1, 2 and 4 times their training
# length and with seeds 0, 1, 2, the CPU testbed with seeds 0, 1, 2 (results/sweeps/), then the notebooks that
# report it and the README's summary.
sweeps: $(STAMP)
	$(PY) -m common.cli.sweeps
	$(PY) -m common.cli.notebooks 2-Application/EDM_testbed.ipynb 2-Application/DiT_testbed.ipynb \
		2-Application/CPU_testbed.ipynb 2-Application/Table1_detection.ipynb 2-Application/SD_steering.ipynb
	$(PY) -m common.cli.summary --write README.md

# Fast tier (default): unit tests and every notebook in SMOKE mode, offline.
test: $(STAMP)
	$(OFFLINE) $(PY) -m pytest

# Slow tier: paper-scale runs (minutes).
test-slow: $(STAMP)
	$(OFFLINE) $(PY) -m pytest -m slow

bench: $(STAMP)
	$(OFFLINE) $(PY) benchmarks/train_speed.py
	$(OFFLINE) $(PY) benchmarks/denormal_speed.py
	$(OFFLINE) $(PY) benchmarks/detect_speed.py
	$(OFFLINE) $(PY) benchmarks/table1_speed.py --model testbed
	$(OFFLINE) $(PY) benchmarks/table1_speed.py --model sd14
	$(OFFLINE) $(PY) benchmarks/shard_speed.py
	$(OFFLINE) $(PY) benchmarks/testbed_train_speed.py --profile

# Every notebook in SMOKE mode, outputs in smoke-out/ (a quick look without touching Figs/ or results/).
smoke: $(STAMP)
	$(OFFLINE) DGR_CACHE=smoke-out/cache DGR_FIG_DPI=100 $(PY) -m common.cli.notebooks --smoke --out smoke-out

clean-cache:
	rm -rf .cache smoke-out

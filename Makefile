# Every command people run, and the ones CI runs (.ci/run calls `make test`).
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch/torchvision pair pip finds on this kind of machine; override for another platform.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO ?= demo

.PHONY: setup demo test test-fast lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/mieruka synth $(DEMO)/data --per-class 60 --seed 0
	$(VENV)/bin/mieruka train $(DEMO)/data --out $(DEMO)/run --epochs 8 --image-size 128
	$(VENV)/bin/mieruka evaluate $(DEMO)/run/model.safetensors $(DEMO)/data --split test --out $(DEMO)/eval
	@echo
	@echo "Demo finished. Model: $(DEMO)/run/model.safetensors; training log: $(DEMO)/run/;"
	@echo "metrics: $(DEMO)/eval/metrics.json; confusion matrix: $(DEMO)/eval/confusion_matrix.png"

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

clean:
	rm -rf $(DEMO) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache

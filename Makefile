# Every command people run, and the ones CI runs (.ci/run calls `make test`).
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch/torchvision pair pip finds on this kind of machine; override for another platform.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO ?= demo

.PHONY: setup browser postgres demo test test-fast lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/mieruka synth $(DEMO)/data --per-class 80 --seed 0
	$(VENV)/bin/mieruka train $(DEMO)/data --out $(DEMO)/run --image-size 224 --epochs 20
	$(VENV)/bin/mieruka evaluate $(DEMO)/run/model.safetensors $(DEMO)/data --split test --out $(DEMO)/eval
	$(VENV)/bin/mieruka explain $(DEMO)/run/model.safetensors $(DEMO)/data --split test --out $(DEMO)/explain
	@echo
	@echo "Demo finished."
	@echo "  model:             $(DEMO)/run/model.safetensors (training curve: $(DEMO)/run/training_curve.png)"
	@echo "  test metrics:      $(DEMO)/eval/metrics.json, $(DEMO)/eval/confusion_matrix.png"
	@echo "  explanations:      $(DEMO)/explain/grid.png and $(DEMO)/explain/panels/"

# The report test drives a real headless Chromium from Debian's packages (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
		|| echo "warning: could not install chromium; the browser test will be skipped"

# One test process per core (pytest-xdist), tests handed out one by one; the Ray tests stay on one process (their
# xdist_group) so one local Ray instance runs at a time.
PYTEST_PARALLEL ?= -n auto --dist loadgroup

# The record's PostgreSQL test starts a server from Debian's packages in a temporary folder.
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; } \
		|| echo "warning: could not install postgresql; the PostgreSQL test will be skipped"

test: setup browser postgres
	$(PY) -m pytest -q $(PYTEST_PARALLEL)

test-fast: setup
	$(PY) -m pytest -q $(PYTEST_PARALLEL) -m "not slow"

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

clean:
	rm -rf $(DEMO) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache

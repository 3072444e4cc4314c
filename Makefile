# Two entry points for a fresh machine: `make demo` (set up, run the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BUS := $(VENV)/bus.jpg

.PHONY: setup demo test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: setup
	$(PY) -c "import shutil; from ultralytics.utils import ASSETS; shutil.copy(ASSETS / 'bus.jpg', '$(BUS)')"
	$(VENV)/bin/samtasks point $(BUS) --point 400,500 --sam vit_b --out out/demo

lint: setup
	$(VENV)/bin/ruff check samtasks tests benchmarks
	$(VENV)/bin/ruff format --check samtasks tests benchmarks

test: lint
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/speed_core.py

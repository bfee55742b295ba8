# Two commands do all set-up on a fresh machine:
#   make demo   installs everything, fetches the small real corpus, runs the main job end to end
#   make test   installs everything and runs the default test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= $(HOME)/.cache/bgmid

.PHONY: install demo test lint bench clean

$(BIN)/bgmid: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/bgmid

install: $(BIN)/bgmid
	bash scripts/system-deps.sh

demo: install
	$(BIN)/bgmid demo --root $(DATA)

test: install
	$(BIN)/bgmid models fetch spleeter >/dev/null || echo "note: Spleeter weights not fetched; the port's comparison tests will skip"
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info

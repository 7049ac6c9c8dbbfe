# Sluice developer entry points. `make test` is what CI runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: venv test lint format demo bench clean

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: venv
	$(BIN)/python examples/build_demo_repo.py examples/build/demo-repo
	$(BIN)/sluice preview --repo examples/build/demo-repo --base main --head feature \
		--keys examples/build/demo-repo.keys --format markdown || test $$? -eq 1

bench: venv
	$(BIN)/python bench/preview.py

clean:
	rm -rf $(VENV) examples/build .pytest_cache

VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install dev serve test test-fast lint proto bench clean

# `make serve` needs only what Confab runs on; `make test` adds the development tools.
install: $(VENV)/.installed
dev: $(VENV)/.dev-installed

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	touch $@

serve: install
	$(VENV)/bin/confab serve --listen 127.0.0.1:50051 --data-dir ./var

test: dev lint
	$(PY) -m confab.tools.codegen --check
	$(PY) -m pytest -q

# The unit tests alone (no server, actor system or other process): seconds, not minutes.
test-fast: dev
	$(PY) -m pytest -q -m "not integration"

# mypy runs strict on both (`strict = true` and its few exceptions are in pyproject.toml);
# lint-imports checks the layers' contracts ([tool.importlinter] there too).
lint: dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy -p confab
	$(VENV)/bin/mypy tests
	$(VENV)/bin/lint-imports --no-cache

proto: dev
	$(PY) -m confab.tools.codegen

bench: install
	$(PY) -m confab.tools.bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

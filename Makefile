VENV := .venv
PY := $(VENV)/bin/python
PKGS := runtime actors grpc_edge protos config tools
# mypy cannot see through setuptools' editable import hook, so it checks the code through a
# symlink tree $(TYPING)/confab/<pkg> -> <pkg> that mirrors the installed confab.* layout.
TYPING := $(VENV)/typing

.PHONY: install serve test lint proto bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	mkdir -p $(TYPING)/confab
	for d in $(PKGS); do ln -sfn ../../../$$d $(TYPING)/confab/$$d; done
	touch $@

serve: install
	$(VENV)/bin/confab serve --listen 127.0.0.1:50051 --data-dir ./var

test: install lint
	$(PY) -m confab.tools.codegen --check
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	MYPYPATH=$(TYPING) $(VENV)/bin/mypy --explicit-package-bases \
		$(addprefix $(TYPING)/confab/,runtime actors grpc_edge tools) tests

proto: install
	$(PY) -m confab.tools.codegen

bench: install
	$(PY) -m confab.tools.bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# ureca: every target installs what it needs first, so each works as the first command on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast bench completions lint clean

install: $(VENV)/.installed

# torch and torchvision are pinned to the releases that lie on this machine's disk; pyproject asks only
# for compatible ranges, so GPU machines with an older stack install too.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: install
	bash scripts/demo.sh

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

completions: install
	$(PY) scripts/completions.py

lint: install
	$(VENV)/bin/ruff check ureca_cli tests bench scripts

clean:
	rm -rf $(VENV) build *.egg-info demo-out .pytest_cache

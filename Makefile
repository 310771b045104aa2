# The two commands of the README: `make train` and `make test`.
# Both create the virtual environment on first use (pinned, known-good torch; override with TORCH=...).

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
ARGS   ?=
BIN    := $(VENV)/bin
# The stamp names the torch requirement, so `make test TORCH=...` reinstalls when it changes.
STAMP  := $(VENV)/.relgrad-installed-$(shell printf '%s' '$(TORCH)' | cksum | cut -d' ' -f1)

.PHONY: env train test lint clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.relgrad-installed*
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/relgrad-train $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check relgrad_cli tests

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache

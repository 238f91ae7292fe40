# farmwatch developer targets. `make run` and `make test` set themselves up from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-deps run test bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $@

install: $(STAMP) ## a .venv with every extra and the test tools

system-deps: ## Debian packages the tests drive (Xvfb, xdotool, iproute2 ...); root only
	bash deploy/dev/system-deps.sh

run: install ## a collector on SQLite on localhost and this machine's agent reporting to it
	$(BIN)/python deploy/dev/devrun.py

test: install system-deps
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/run_all.py

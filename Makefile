# farmwatch developer targets. `make run` and `make test` set themselves up from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install system-deps run demo check test test-fast test-lowest bench package

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $@

help: ## this list
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## a .venv with every extra and the test tools

system-deps: ## Debian packages the tests drive (Xvfb, xdotool, iproute2 ...); root only
	bash deploy/dev/system-deps.sh

run: install ## a collector on SQLite on localhost and this machine's agent reporting to it
	$(BIN)/python deploy/dev/devrun.py

demo: install ## a collector on a throwaway database holding a simulated company; prints the console and a sign-in
	$(BIN)/python deploy/dev/demo.py

check: install ## type-check (mypy; strict for the contract, agent and collector) and lint (ruff)
	$(BIN)/mypy
	# the input helpers' Windows transport as mypy sees it on Windows (types-pywin32 stubs)
	$(BIN)/mypy --platform win32 --follow-imports silent $(addprefix farmwatch/agent/probes/input/,helper.py helper_listener.py helper_pipe.py helper_transport.py)
	$(BIN)/ruff check

test: install system-deps ## every test (as root, first installs the Debian packages they drive)
	$(BIN)/pytest

test-fast: install ## the tests that start no servers, processes or namespaces (-m "not slow")
	$(BIN)/pytest -m "not slow"

test-lowest: install ## test-fast with every direct dependency at the lowest version pyproject.toml allows (.venv-lowest)
	rm -rf .venv-lowest
	$(BIN)/uv venv -q --python $(BIN)/python .venv-lowest
	VIRTUAL_ENV=.venv-lowest $(BIN)/uv pip install -q --resolution lowest-direct -e '.[all,dev]'
	.venv-lowest/bin/pytest -m "not slow"

bench: install ## benchmarks, each figure printed beside its baseline
	$(BIN)/python bench/run_all.py

package: ## the self-contained agent (PyInstaller) and its .deb in build/packages/ (deploy/README.md)
	bash deploy/agent/freeze.sh
	bash deploy/agent/build-deb.sh build/agent/dist/farmwatch-agent build/packages

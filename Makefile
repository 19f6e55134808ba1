# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp is rebuilt only when the declared dependencies change, so a second run is quick.
STAMP := $(VENV)/.skxray-installed

.PHONY: setup demo test lint docs bench bench-quick report-check fuzz clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,docs,dask,xrv,distributed]"
	touch $(STAMP)

demo: setup
	$(BIN)/python -m skxray.cli demo --out demo-report

# The demo report in headless Chromium at 1280 px (height, width, console errors, images);
# prints a note and passes when Chromium is not installed. `make test` runs it too.
report-check: setup
	$(BIN)/python benchmarks/report_check.py --build "$$(mktemp -d)/report-check"

lint: setup
	$(BIN)/ruff check skxray tests benchmarks examples

# One pytest-xdist worker per CPU core (at most 4), one torch thread each; tests that
# share a module-scoped fixture stay on one worker (tests/conftest.py). TEST_WORKERS=0
# runs the suite in this process.
TEST_WORKERS ?= auto
test: setup lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --maxprocesses=4 --dist loadgroup \
		--durations=15 --doctest-modules skxray tests
	$(MAKE) docs

docs: setup
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

bench: setup
	$(BIN)/python benchmarks/run_all.py

bench-quick: setup
	$(BIN)/python benchmarks/run_all.py --quick

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .ruff_cache

# Coverage-guided fuzzing of skxray.io.read_image (needs the `fuzz` extra: atheris).
SECONDS ?= 60
fuzz: setup
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[fuzz]"
	$(BIN)/python benchmarks/fuzz.py --seconds $(SECONDS)

# The two commands a newcomer needs:
#   make book   set up .venv (if absent) and build the HTML book into _build/html (needs Python 3.10+
#               and make; everything else, MathJax included, comes from the lock)
#   make test   set up .venv (if absent) and run every test: lint, unit tests, notebooks (twice: as
#               they are, and with torch's non-vectorised kernels, ATEN_CPU_CAPABILITY=default), the
#               claims report under the same variable, the book build and the built book in headless
#               Chromium (installed with apt-get when missing and allowed, else it stops at once)
# Both install from the lock file requirements/lock.txt (exact versions and hashes); `make lock`
# refreshes it, `make test-latest` tries the notebooks with today's newest versions instead.

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
LOCK        := requirements/lock.txt
STAMP       := $(VENV)/.installed-stamp
# torch's CPU builds; the lock names this index too (it holds torch==2.13.0+cpu).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# pip retries a failed index lookup once: where the CPU index is unreachable (a machine whose pip
# serves torch from a local wheel) each package's lookup there then fails in milliseconds.
PIP         := python -m pip install --quiet --retries 1
CELL_TIMEOUT ?= 300
NBVAL_ARGS  := -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env \
               --nbval-sanitize-with nbval_sanitize.cfg --nbval-cell-timeout=$(CELL_TIMEOUT) book
export MPLBACKEND := Agg
export TQDM_DISABLE := 1

.PHONY: install book test lint unit notebooks notebooks-default claims-default book-strict execute \
        benchmarks lock test-latest claims clean browser-test browser-deps

$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/$(PIP) --require-hashes --no-deps -r $(LOCK)
	$(BIN)/$(PIP) --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build -W -n --keep-going .
	@echo "Book built: open _build/html/index.html"

test: browser-deps lint unit notebooks notebooks-default claims-default book-strict browser-test

# Chromium and chromedriver for the browser test (Debian packages): installed when missing and
# this user may (root, or sudo without a password); otherwise stop before anything else runs.
APT_PKGS := chromium chromium-driver
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; \
	else echo "make test needs Chromium for the browser test; install it first:"; \
	     echo "  sudo apt-get update && sudo apt-get install -y $(APT_PKGS)"; exit 1; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "make test needs chromium and chromedriver on the PATH (no apt-get here)"; exit 1; fi; \
	echo "installing $(APT_PKGS) with apt-get"; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	  $(APT_PKGS) >/dev/null && chromium --version

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: $(STAMP)
	$(BIN)/python -m pytest tests

notebooks: $(STAMP)
	$(BIN)/python $(NBVAL_ARGS)

# The same notebooks with another CPU's rounding: torch's non-vectorised kernels. Nothing nbval
# compares may depend on the last bits of a float.
notebooks-default: $(STAMP)
	ATEN_CPU_CAPABILITY=default $(BIN)/python $(NBVAL_ARGS)

claims-default: $(STAMP)
	ATEN_CPU_CAPABILITY=default $(BIN)/markovformer claims --out book/data > /dev/null

book-strict: $(STAMP)
	rm -rf _build/html _build/.doctrees
	$(BIN)/jupyter-book build -W -n --keep-going .

# The built book (_build/html) in headless Chromium with the network off: every page, every live
# figure moved (tests/browser); screenshots in _build/screenshots/. Fails if the book was not built
# or Chromium is missing (Debian: apt-get install -y chromium chromium-driver).
browser-test: $(STAMP)
	MARKOVFORMER_BROWSER_TEST=1 $(BIN)/python -m pytest -p no:cacheprovider -q tests/browser

# Re-execute every chapter in place (refreshes the committed outputs and widget state).
execute: $(STAMP)
	cd book && for nb in [0-9]*.ipynb; do \
	  echo "executing $$nb"; \
	  ../$(BIN)/jupyter execute --inplace --timeout=$(CELL_TIMEOUT) "$$nb" || exit 1; \
	done

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/sampler.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/landscape.py

# Every claim the book asserts, measured from the committed artifacts (book/data).
claims: $(STAMP)
	$(BIN)/markovformer claims --out book/data

# Refresh the lock: newest versions allowed by pyproject.toml and requirements/pins.in, with
# hashes, made by pip-tools in its own venv. PIP_CONFIG_FILE=/dev/null keeps this machine's pip
# configuration (extra indexes, caps) out of the lock.
LOCK_VENV := .venv-lock
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || \
	  ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/$(PIP) "pip-tools==7.6.2")
	CUSTOM_COMPILE_COMMAND="make lock" PIP_CONFIG_FILE=/dev/null $(LOCK_VENV)/bin/pip-compile \
	  --quiet --upgrade --generate-hashes --allow-unsafe --strip-extras --no-emit-find-links \
	  --extra book --extra test --extra-index-url $(TORCH_INDEX) --pip-args "--retries 1" \
	  --output-file $(LOCK) pyproject.toml requirements/pins.in

# The notebook tests in a throw-away venv resolved to today's newest versions (no lock; torch
# stays the CPU build of the lock): what the next `make lock` would break. CI does not run it.
LATEST_VENV := .venv-latest
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/$(PIP) --upgrade pip
	$(LATEST_VENV)/bin/$(PIP) --extra-index-url $(TORCH_INDEX) "torch==2.13.0" -e ".[book,test]"
	$(LATEST_VENV)/bin/python -m pip freeze --exclude-editable > $(LATEST_VENV)/resolved.txt
	@echo "resolved: $$(grep -E '^(numpy|scipy|matplotlib|torch|bokeh)==' $(LATEST_VENV)/resolved.txt | tr '\n' ' ')"
	$(LATEST_VENV)/bin/python $(NBVAL_ARGS)

clean:
	rm -rf _build .pytest_cache .ruff_cache

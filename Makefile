# The two commands a newcomer needs:
#   make book   set up .venv (if absent) and build the HTML book into _build/html
#   make test   set up .venv (if absent) and run every test: lint, unit tests, notebooks, book build
# TORCH_SPEC overrides the torch requirement (CPU wheel by default), e.g. TORCH_SPEC="torch==2.5.1".

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.installed-stamp
CELL_TIMEOUT ?= 300
export MPLBACKEND := Agg
export TQDM_DISABLE := 1

.PHONY: install book test lint unit notebooks book-strict execute benchmarks clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" -e ".[book,test]"
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build -W -n --keep-going .
	@echo "Book built: open _build/html/index.html"

test: lint unit notebooks book-strict

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: $(STAMP)
	$(BIN)/python -m pytest tests

notebooks: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with nbval_sanitize.cfg --nbval-cell-timeout=$(CELL_TIMEOUT) book

book-strict: $(STAMP)
	rm -rf _build/html _build/.doctrees
	$(BIN)/jupyter-book build -W -n --keep-going .

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

clean:
	rm -rf _build .pytest_cache .ruff_cache

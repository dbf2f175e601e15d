# Everything a fresh clone needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tlc-installed

.PHONY: install demo test test-fast bench fuzz clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The seed article's experiment on scikit-learn's digits: train on 0-4, then 5-9 with the
# frozen features (transfer) and from scratch; compare accuracy per epoch, time and params.
demo: $(STAMP)
	-$(BIN)/tlc check spec_examples/*.yaml
	$(BIN)/tlc train spec_examples/digits_source.yaml --runs runs
	$(BIN)/tlc train spec_examples/digits_transfer.yaml --runs runs
	$(BIN)/tlc train spec_examples/digits_scratch.yaml --runs runs
	$(BIN)/tlc compare runs/digits_transfer runs/digits_scratch -o runs/compare.png

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/check_speed.py
	$(BIN)/python bench/cache_speed.py --size 32 --rounds 3
	$(BIN)/python bench/cache_speed.py --size 64 --rounds 1
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/distributed.py

clean:
	rm -rf $(VENV) models runs bench/out .pytest_cache

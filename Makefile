# Everything a fresh clone needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tlc-installed

.PHONY: install demo test test-fast bench fuzz clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,export]"
	touch $(STAMP)

install: $(STAMP)

# The seed article's experiment on scikit-learn's digits: train on 0-4, then, with scarce data
# (~45 images of 5-9), reuse its frozen features (transfer) or train from scratch, three seeds
# each; compare accuracy per epoch, time and params.
DEMO_SEEDS ?= 0 1 2
demo: $(STAMP)
	$(BIN)/tlc check spec_examples/digits_source.yaml spec_examples/digits_scratch_scarce.yaml
	$(BIN)/tlc train spec_examples/digits_source.yaml --runs runs
	$(BIN)/tlc check spec_examples/digits_transfer_scarce.yaml
	for seed in $(DEMO_SEEDS); do \
	  $(BIN)/tlc train spec_examples/digits_transfer_scarce.yaml --runs runs/seed$$seed --seed $$seed && \
	  $(BIN)/tlc train spec_examples/digits_scratch_scarce.yaml --runs runs/seed$$seed --seed $$seed || exit 1; \
	done
	$(BIN)/tlc compare $(foreach s,$(DEMO_SEEDS),runs/seed$(s)/digits_transfer_scarce) \
	  $(foreach s,$(DEMO_SEEDS),runs/seed$(s)/digits_scratch_scarce) -o runs/compare.png
	@echo "Next: source $(VENV)/bin/activate, then tlc --help (or call $(BIN)/tlc); the README walks on from here."

# Two workers (CI's machine has 2 cores), each test file on one worker so its module fixtures are
# built once: 7.9 min against 18 min in one process here.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/check_speed.py
	$(BIN)/python bench/cache_speed.py --size 32 --rounds 3
	$(BIN)/python bench/cache_speed.py --size 64 --rounds 1
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/distributed.py
	$(BIN)/python bench/data_scale.py --throughput 20000
	$(BIN)/python bench/photos.py
	$(BIN)/python bench/bad_files.py
	$(BIN)/python bench/augment_views.py
	$(BIN)/python bench/serve_load.py
	$(BIN)/python bench/serve_load.py --backbone mobilenet_v2
	$(BIN)/python bench/precise_bn.py
	$(BIN)/python bench/distill.py
	$(BIN)/python bench/distill_edge.py
	$(BIN)/python -m pip install --quiet keras-tuner  # the baseline of tune_speed.py, for the benchmark only
	$(BIN)/python bench/tune_speed.py
	$(BIN)/python bench/tasks.py
	$(BIN)/python bench/segment_check.py
	$(BIN)/python bench/segment.py
	$(BIN)/python bench/coco_store.py

clean:
	rm -rf $(VENV) models runs bench/out .pytest_cache

# mg-tune: `make demo` runs a real search on the embedded data; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHELL  := /bin/bash
STAMP  := $(VENV)/.mg-tune-installed
LOCK   := requirements.lock
# The installer and build backend are pinned too: a new pip or setuptools must not change an install.
BUILD_TOOLS := pip==26.3 setuptools==84.2.1

.PHONY: install test test-fast demo bench bench-gpu gpu-wheels lock check-latest clean

# The locked install: every package at the version in requirements.lock (no resolving), then mg-tune itself.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(BUILD_TOOLS)
	$(BIN)/pip install -q --no-deps -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

# Regenerate requirements.lock: pip resolves pyproject's ranges (the newest releases they allow today)
# in a throw-away venv without installing anything; tools/write_lock.py writes the pins.
LOCK_VENV := .venv-lock

lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q $(BUILD_TOOLS)
	$(LOCK_VENV)/bin/pip install -q --dry-run --ignore-installed --report $(LOCK_VENV)/report.json ".[test]"
	$(LOCK_VENV)/bin/python tools/write_lock.py $(LOCK_VENV)/report.json $(LOCK)
	rm -rf $(LOCK_VENV)
	@echo "wrote $(LOCK); now run make test and make check-latest"

# Drift check: a throw-away venv resolved from pyproject's ranges alone (no lock: the newest allowed
# releases of everything), running a fast subset: a tiny real search end to end, sampler pickling, specs.
LATEST_VENV  := .venv-latest
LATEST_TESTS := tests/search/test_samplers.py tests/search/test_spec.py tests/search/test_search.py -k 'not resume_after_killing'  # the driver-kill test (1.5 min) stays in make test

check-latest:
	rm -rf $(LATEST_VENV) && $(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/pip install -q -U pip
	$(LATEST_VENV)/bin/pip install -q -e ".[test]"
	$(LATEST_VENV)/bin/pip check
	@echo "releases newer than the lock (< locked, > newest):"
	@diff <(grep -v -e '^#' -e '^setuptools==' $(LOCK) | LC_ALL=C sort) \
	      <($(LATEST_VENV)/bin/pip freeze --exclude-editable | tr 'A-Z_' 'a-z-' | LC_ALL=C sort) | grep '^[<>]' || echo "  none"
	$(LATEST_VENV)/bin/python -m pytest -q -p no:cacheprovider $(LATEST_TESTS)
	rm -rf $(LATEST_VENV)  # 5+ GB (torch): a passing check leaves the disk as it found it

# Debian's Chromium for the browser tests (Playwright's own browser download cannot work here).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	apt-get install -y chromium || (apt-get update && apt-get install -y chromium) || \
		echo "warning: could not install chromium; the browser tests (tests/services/test_dashboard.py) will be skipped"

# Debian's OpenSSH server: tests/services/test_ray_up.py runs `ray up` with the local node provider over SSH to 127.0.0.1.
SSHD := /usr/sbin/sshd

$(SSHD):
	apt-get install -y openssh-server || (apt-get update && apt-get install -y openssh-server) || \
		echo "warning: could not install openssh-server; tests/services/test_ray_up.py will be skipped"

install: $(STAMP) $(CHROMIUM) $(SSHD)

test: $(STAMP) $(CHROMIUM) $(SSHD)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# While developing: every test but those marked slow (the ones that start Ray, a server or a browser).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" tests

DEMO := $(CURDIR)/demo-output

demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	MLFLOW_TRACKING_URI=sqlite:///$(DEMO)/mlflow.db $(BIN)/mg-tune search search_spaces/quickstart.yaml \
		--name demo --storage-path $(DEMO)/runs

bench: $(STAMP)
	$(BIN)/python bench/guided_step.py

# GPU benchmark (docs/benchmarks.md "GPU benchmark"): step ratios at 224 px, trials packed per GPU, loader vs step.
# Needs a CUDA device; writes bench/results/gpu/gpu_bench.{json,md}. On CPU: bench/gpu.py --device cpu --dry-run.
bench-gpu: $(STAMP)
	PYTHON=$(BIN)/python bench/gpu.sh

# Wheels of what bench/gpu.py needs beyond the GPU machine's image (torch, numpy, pillow, rich are there), at the
# locked versions, for CPython 3.12 on x86-64 Linux, into .whl/ (git-ignored): bench/gpu.sh installs them offline.
GPU_WHEELS := pydantic pydantic-core annotated-types typing-inspection typing-extensions bcos pycocotools

gpu-wheels: $(STAMP)
	rm -rf .whl && mkdir -p .whl
	for name in $(GPU_WHEELS); do \
		pin=$$(grep -i "^$$name==" $(LOCK)) || { echo "$$name is not in $(LOCK)"; exit 1; }; \
		$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
			--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$$pin" || exit 1; \
	done
	ls .whl

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(LOCK_VENV) mlruns mlflow.db runs demo-output

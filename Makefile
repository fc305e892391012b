# mg-tune: `make demo` runs a real search on the embedded data; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mg-tune-installed

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

# Debian's Chromium for the browser tests (Playwright's own browser download cannot work here).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	apt-get install -y chromium || (apt-get update && apt-get install -y chromium) || \
		echo "warning: could not install chromium; the browser tests (tests/test_dashboard.py) will be skipped"

# Debian's OpenSSH server: tests/test_ray_up.py runs `ray up` with the local node provider over SSH to 127.0.0.1.
SSHD := /usr/sbin/sshd

$(SSHD):
	apt-get install -y openssh-server || (apt-get update && apt-get install -y openssh-server) || \
		echo "warning: could not install openssh-server; tests/test_ray_up.py will be skipped"

install: $(STAMP) $(CHROMIUM) $(SSHD)

test: $(STAMP) $(CHROMIUM) $(SSHD)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

DEMO := $(CURDIR)/demo-output

demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	MLFLOW_TRACKING_URI=sqlite:///$(DEMO)/mlflow.db $(BIN)/mg-tune search search_spaces/quickstart.yaml \
		--name demo --storage-path $(DEMO)/runs

bench: $(STAMP)
	$(BIN)/python bench/guided_step.py

clean:
	rm -rf $(VENV) mlruns mlflow.db runs demo-output

# Quayside: `make run` and `make test` are the two commands (see README.md).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?= ./data
# chromium + chromium-driver: the web UI's browser tests (tests/ui/test_browser.py, selenium);
# prometheus (promtool) and systemd (systemd-analyze): the deploy/ files' checks (tests/deploy/).
APT_PKGS := redis-server docker-registry skopeo apache2-utils nginx wrk iproute2 chromium chromium-driver prometheus systemd
# Real clients: installed when missing; their tests skip with the tool's own error if they cannot run.
APT_OPTIONAL := podman containerd

.PHONY: install deps sysdeps run test lint bench bench-quick clean

install: deps sysdeps

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

deps: $(BIN)/.installed

sysdeps:
	@SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	optional=""; for p in $(APT_OPTIONAL); do dpkg -s $$p >/dev/null 2>&1 || optional="$$optional $$p"; done; \
	if [ -n "$$missing$$optional" ]; then \
	  echo "installing Debian packages:$$missing$$optional"; \
	  $$SUDO apt-get update -qq || true; \
	fi; \
	if [ -n "$$missing" ]; then \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
	    || { echo "required Debian packages could not be installed:$$missing"; exit 1; }; \
	fi; \
	if [ -n "$$optional" ]; then \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$optional >/dev/null \
	    || echo "optional packages not installed:$$optional (their tests will skip)"; \
	fi

run: deps
	$(BIN)/quayside run --data $(DATA)

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/quayside bench

bench-quick: install
	$(BIN)/quayside bench --quick

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

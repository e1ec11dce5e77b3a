# Quayside: `make run` and `make test` are the two commands (see README.md).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?= ./data
APT_PKGS := redis-server docker-registry skopeo apache2-utils
# Optional real clients/peers: installed when missing, tests skip with a reason if they cannot run.
APT_OPTIONAL := podman containerd nginx wrk

.PHONY: install deps sysdeps run test lint bench bench-quick clean

install: deps sysdeps

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

deps: $(BIN)/.installed

sysdeps:
	@missing=""; \
	for p in $(APT_PKGS) $(APT_OPTIONAL); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null || \
	  { for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || { echo "required package $$p could not be installed"; exit 1; }; done; }; \
	fi

run: deps
	$(BIN)/python -m regcore.cli run --data $(DATA)

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true

bench: install
	$(BIN)/quayside bench

bench-quick: install
	$(BIN)/quayside bench --quick

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

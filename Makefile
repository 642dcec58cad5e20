# herdcast: `make initrd` builds build/tftpboot/, `make test` runs every test.
# Both install what they need (Debian packages when run as root, and a venv).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all deps venv initrd test test-fast lint bench demo clean

all: initrd

deps:
	./scripts/install-deps

$(STAMP): pyproject.toml
	test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,deploy]'
	touch $@

venv: $(STAMP)

initrd: deps venv
	$(PY) -m builder initrd $(if $(HTTP_URL),--http-url $(HTTP_URL)) $(if $(TRUST_KEY),--trust-key $(TRUST_KEY)) $(if $(filter yes,$(GUARDED)),--guarded)

test: deps venv
	$(PY) -m ruff check agent builder tests bench
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not slow"

lint: venv
	$(PY) -m ruff check agent builder tests bench

bench: venv
	$(PY) bench/throughput

demo: initrd
	$(PY) -m builder demo

clean:
	rm -rf build

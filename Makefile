# herdcast: `make initrd` builds build/tftpboot/, `make test` runs every test.
# Both install what they need (Debian packages when run as root, and a venv).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all deps venv initrd test test-fast lint bench demo install clean

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
	$(PY) -m builder initrd $(if $(ARCH),--arch $(ARCH)) $(if $(HTTP_URL),--http-url $(HTTP_URL)) $(if $(TRUST_KEY),--trust-key $(TRUST_KEY)) $(if $(filter yes,$(GUARDED)),--guarded) $(if $(FIRMWARE),--firmware $(FIRMWARE))

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

# The server's herdcast, on PATH: a venv of its own under $(LIBDIR) holding the package
# (not editable), $(BINDIR)/herdcast linked to it, the systemd unit for `send --serve` and
# its settings (kept when already there).
PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib/herdcast
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(SYSCONFDIR)/systemd/system

install:
	/usr/bin/python3 -m venv $(LIBDIR)
	$(LIBDIR)/bin/python -m pip install -q --upgrade pip
	$(LIBDIR)/bin/python -m pip install -q .
	install -d $(BINDIR) $(SYSCONFDIR)/herdcast $(UNITDIR)
	ln -sf $(LIBDIR)/bin/herdcast $(BINDIR)/herdcast
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	    dist/systemd/herdcast-serve.service > $(UNITDIR)/herdcast-serve.service
	test -e $(SYSCONFDIR)/herdcast/serve.env || \
	    install -m 644 dist/systemd/serve.env $(SYSCONFDIR)/herdcast/serve.env
	@echo "herdcast: installed $(BINDIR)/herdcast and $(UNITDIR)/herdcast-serve.service;" \
	    "edit $(SYSCONFDIR)/herdcast/serve.env, then: systemctl enable --now herdcast-serve"

clean:
	rm -rf build

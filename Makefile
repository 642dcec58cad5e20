# herdcast: `make initrd` builds build/tftpboot/, `make test` runs every test.
# Both install what they need (Debian packages when run as root, and a venv).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all deps venv initrd test test-fast lint bench demo demo-deploy manual man completion install clean

all: initrd

deps:
	./scripts/install-deps

$(STAMP): pyproject.toml
	test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,deploy,manual]'
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

# herdcast(1) and the bash/zsh completions, generated from the commands' own parsers
# (argparse-manpage, shtab) into build/share/, laid out as /usr/share
manual man completion: venv
	$(PY) -m builder manual --out build/share

# herdcast deploy on libvirt machines behind Redfish, IPMI and Wake-on-LAN (issue 19)
demo-deploy: initrd
	$(PY) -m builder demo --deploy

# The server's herdcast, on PATH: a venv of its own under $(LIBDIR) holding the package
# (not editable), $(BINDIR)/herdcast linked to it, its man page and shell completions
# (generated there from its parsers), the systemd unit for `send --serve` and its settings
# (kept when already there).
PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib/herdcast
BINDIR     ?= $(PREFIX)/bin
DATADIR    ?= $(PREFIX)/share
SYSCONFDIR ?= /etc
UNITDIR    ?= $(SYSCONFDIR)/systemd/system

install:
	/usr/bin/python3 -m venv $(LIBDIR)
	$(LIBDIR)/bin/python -m pip install -q --upgrade pip
	$(LIBDIR)/bin/python -m pip install -q '.[manual]'
	install -d $(BINDIR) $(SYSCONFDIR)/herdcast $(UNITDIR)
	ln -sf $(LIBDIR)/bin/herdcast $(BINDIR)/herdcast
	$(LIBDIR)/bin/python -m builder manual --out $(LIBDIR)/share >/dev/null
	install -D -m 644 $(LIBDIR)/share/man/man1/herdcast.1 $(DATADIR)/man/man1/herdcast.1
	install -D -m 644 $(LIBDIR)/share/bash-completion/completions/herdcast \
	    $(DATADIR)/bash-completion/completions/herdcast
	install -D -m 644 $(LIBDIR)/share/zsh/site-functions/_herdcast \
	    $(DATADIR)/zsh/site-functions/_herdcast
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	    dist/systemd/herdcast-serve.service > $(UNITDIR)/herdcast-serve.service
	test -e $(SYSCONFDIR)/herdcast/serve.env || \
	    install -m 644 dist/systemd/serve.env $(SYSCONFDIR)/herdcast/serve.env
	@echo "herdcast: installed $(BINDIR)/herdcast and $(UNITDIR)/herdcast-serve.service;" \
	    "edit $(SYSCONFDIR)/herdcast/serve.env, then: systemctl enable --now herdcast-serve"

clean:
	rm -rf build

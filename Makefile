# switchyard — developer entry points. The real build is meson + ninja; this file only installs
# what is missing (Debian 12), configures build directories and runs the suites.
#
#   make deps            install missing Debian packages (apt-get; idempotent)
#   make build           deps + meson setup build + ninja -C build
#   make test            build + the whole meson suite
#   make demo            build + tests/demo.sh (blue/green origins behind the proxy)
#   make bench           build + tests/bench/bench.sh (against nginx and HAProxy)
#   make bench-instructions  build + instructions per proxied request (callgrind; no timing)
#   make bench-targets   build + tests/bench/targets.sh (issue 7's eight targets, 6-7 minutes)
#   make check-tls       build + tests/tls/check_tls.sh (sslscan + testssl against a TLS listener)
#   make check-sanitize  the whole suite under ASan + UBSan (build-asan)
#   make check-tsan      unit + 'tsan' suites under ThreadSanitizer (build-tsan)
#   make fuzz            every fuzz target for FUZZ_SECONDS (60) each; needs clang (build-fuzz)
#   make soak            build + tests/soak/soak.sh (10 min of mixed traffic, a cutover and a
#                        rollback every 30 s, a reload every minute; SOAK_SECONDS, SOAK_OUT)
#   make soak-asan       the same against the ASan build (ASAN_BUILD)
#   make clean           remove the build directories
#
# Build directories can be moved: make test BUILD=build-mine ASAN_BUILD=... TSAN_BUILD=...

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
.PHONY: deps build test demo bench bench-instructions bench-targets check-tls check-sanitize check-tsan fuzz soak soak-asan clean

# Plain '=' so that only the command line (not a stray environment variable) moves them.
BUILD      = build
ASAN_BUILD = build-asan
TSAN_BUILD = build-tsan
NPROC      = 2
MESON      = meson
NINJA      = ninja

PACKAGES := build-essential meson ninja-build pkg-config libevent-dev libssl-dev libyaml-dev \
	libjansson-dev libcurl4-openssl-dev node-llhttp python3 python3-prometheus-client curl wrk \
	nginx haproxy clang libclang-rt-14-dev procps openssl testssl.sh sslscan valgrind

# Root runs apt-get itself; anyone else goes through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
POLICY_RC_D ?= /usr/sbin/policy-rc.d

export ASAN_OPTIONS  ?= detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1

# Installs only the missing packages; when nothing is missing it touches nothing (no apt-get
# update). Daemons that Debian would start on install (nginx and haproxy listen on :80) are kept
# from starting with a temporary policy-rc.d, and stopped afterwards should one be running anyway.
deps:
	@missing=(); \
	for p in $(PACKAGES); do \
	    st=$$(dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null || true); \
	    [ "$$st" = "install ok installed" ] || missing+=("$$p"); \
	done; \
	if [ $${#missing[@]} -eq 0 ]; then echo "deps: all $(words $(PACKAGES)) packages installed"; exit 0; fi; \
	echo "deps: installing ($${#missing[@]} missing): $${missing[*]}"; \
	if [ -n "$(SUDO)" ] && ! command -v sudo >/dev/null; then \
	    echo "deps: not root and no sudo: install these as root: $${missing[*]}" >&2; exit 1; fi; \
	prc=$(POLICY_RC_D); own_prc=; \
	if [ ! -e $$prc ]; then \
	    printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee $$prc >/dev/null && $(SUDO) chmod 755 $$prc && own_prc=1; fi; \
	rc=0; \
	{ $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$${missing[@]}"; } || rc=$$?; \
	[ -z "$$own_prc" ] || $(SUDO) rm -f $$prc; \
	for d in nginx haproxy; do \
	    case " $${missing[*]} " in *" $$d "*) ;; *) continue ;; esac; \
	    $(SUDO) service $$d stop >/dev/null 2>&1 || true; \
	    for pf in /run/$$d.pid /var/run/$$d.pid; do \
	        [ -s $$pf ] && $(SUDO) kill "$$(cat $$pf)" 2>/dev/null || true; \
	    done; \
	done; \
	if [ $$rc -ne 0 ]; then echo "deps: apt-get failed (exit $$rc)" >&2; exit $$rc; fi; \
	echo "deps: done"

build: deps
	@[ -f $(BUILD)/meson-private/coredata.dat ] || $(MESON) setup $(BUILD)
	$(NINJA) -C $(BUILD)

test: build
	$(MESON) test -C $(BUILD) --print-errorlogs --num-processes $(NPROC)

demo: build
	BUILD_DIR=$(BUILD) bash tests/demo.sh

bench: build
	BUILD_DIR=$(BUILD) bash tests/bench/bench.sh

bench-instructions: build
	BUILD_DIR=$(BUILD) bash tests/bench/instructions.sh

bench-targets: build
	BUILD_DIR=$(BUILD) bash tests/bench/targets.sh

check-tls: build
	bash tests/tls/check_tls.sh $(BUILD)/switchyard

check-sanitize: deps
	@[ -f $(ASAN_BUILD)/meson-private/coredata.dat ] || \
	    $(MESON) setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false
	$(NINJA) -C $(ASAN_BUILD)
	$(MESON) test -C $(ASAN_BUILD) --print-errorlogs --num-processes $(NPROC) --timeout-multiplier 3

check-tsan: deps
	@[ -f $(TSAN_BUILD)/meson-private/coredata.dat ] || $(MESON) setup $(TSAN_BUILD) -Db_sanitize=thread
	$(NINJA) -C $(TSAN_BUILD)
	TSAN_OPTIONS=$${TSAN_OPTIONS:-halt_on_error=1} \
	    $(MESON) test -C $(TSAN_BUILD) --print-errorlogs --num-processes $(NPROC) \
	    --timeout-multiplier 3 --suite unit --suite tsan

soak: build
	SOAK_BUILD=$(BUILD) bash tests/soak/soak.sh

soak-asan: deps
	@[ -f $(ASAN_BUILD)/meson-private/coredata.dat ] || \
	    $(MESON) setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false
	$(NINJA) -C $(ASAN_BUILD)
	SOAK_BUILD=$(ASAN_BUILD) bash tests/soak/soak.sh

FUZZ_BUILD   = build-fuzz
FUZZ_SECONDS = 60
FUZZ_TARGETS = reqframe respframe chunked roundtrip config control statefile
FUZZ_OUT     = $(FUZZ_BUILD)/fuzz-out

fuzz: deps
	@[ -f $(FUZZ_BUILD)/meson-private/coredata.dat ] || \
	    CC=clang $(MESON) setup $(FUZZ_BUILD) -Dfuzzing=true -Db_lundef=false
	$(NINJA) -C $(FUZZ_BUILD) $(addprefix tests/fuzz/fuzz_,$(FUZZ_TARGETS))
	@failed=(); \
	for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(FUZZ_OUT)/corpus-$$t $(FUZZ_OUT)/crashes-$$t; \
	    echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	    if $(FUZZ_BUILD)/tests/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=$(FUZZ_OUT)/crashes-$$t/ \
	        $(FUZZ_OUT)/corpus-$$t tests/fuzz/corpus/$$t > $(FUZZ_OUT)/$$t.log 2>&1; then \
	        grep -E '^#[0-9]+' $(FUZZ_OUT)/$$t.log | tail -1; \
	    else \
	        failed+=("$$t"); tail -40 $(FUZZ_OUT)/$$t.log; \
	    fi; \
	done; \
	echo "fuzz: logs and new corpus entries in $(FUZZ_OUT)/, crash inputs in $(FUZZ_OUT)/crashes-*/"; \
	echo "fuzz: replay one with $(FUZZ_BUILD)/tests/fuzz/fuzz_NAME FILE; keep it as tests/fuzz/corpus/NAME/<what_it_was>"; \
	if [ $${#failed[@]} -gt 0 ]; then echo "fuzz: crashed: $${failed[*]}" >&2; exit 1; fi

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)

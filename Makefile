# xvs: the two commands README.md promises, plus helpers they use.
#   make lab    installs what is missing, builds xvs and runs the seed DR lab (root).
#   make test   installs what is missing, then fmt check, clippy (-D warnings), all tests (root),
#               and a short run of each fuzz target (make fuzz: long runs).
#   make soak   the DR lab under steady mixed traffic for 10 minutes (root): memory, table
#               entries and UMEM frames must not grow or leak (make test runs a 60 s slice).
SHELL := /bin/bash
CARGO ?= cargo

# Debian packages the build needs (checked with dpkg, installed only when missing).
DEB_PACKAGES := build-essential pkg-config
# Frame I/O (crates/dataplane): clang builds the XDP filter and libxdp's BPF objects, m4/libelf/zlib
# build libxdp; iproute2, ethtool and ping drive the veth/namespace tests.
DEB_PACKAGES += clang llvm m4 libelf-dev zlib1g-dev iproute2 ethtool iputils-ping
# The labs and their tests: curl as the client, python3 for the real servers' HTTP/TCP/UDP;
# the HA lab (crates/cli/tests/ha.rs): keepalived moves the VIP between two directors (VRRP),
# nftables keeps a dead director's kernel from resetting the VIP's connections.
DEB_PACKAGES += curl python3 keepalived nftables
# The metrics test (crates/cli/tests/metrics.rs) checks xvs's endpoint against node_exporter's
# own IPVS collector reading the same numbers.
DEB_PACKAGES += prometheus-node-exporter
# The health-check tests (crates/cli/tests/health.rs): openssl makes the HTTPS real server's CA
# and certificate.
DEB_PACKAGES += openssl
# The scale-out lab (crates/cli/tests/scaleout.rs, xvs lab --scale-out N): bird2 on the router
# (BGP, BFD, ECMP into the kernel) and on every director (announcing the VIP device).
DEB_PACKAGES += bird2

.PHONY: lab test soak deps toolchain fmt clippy unit bench fuzz fuzz-tool fuzz-check fuzz-run fuzz-seeds

# The seed lab: client, router, director (xvs on AF_XDP) and two real servers in network
# namespaces; HTTP through the VIP. Other labs: make lab LAB_ARGS="--mode nat --scheduler wrr",
# or N directors behind ECMP and BGP: make lab LAB_ARGS="--scale-out 3".
LAB_ARGS ?= --mode dr --scheduler rr --requests 20
lab: deps toolchain
	$(CARGO) build -p xvs-cli --bins
	$(CARGO) run -q -p xvs-cli --bin xvs -- lab $(LAB_ARGS)

test: deps toolchain fuzz-tool
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@log=$$(mktemp); set -o pipefail; $(CARGO) test --workspace 2>&1 | tee $$log; status=$$?; \
	awk '/^test result:/ {p += $$4; f += $$6} END {printf "summary: %d passed, %d failed\n", p, f}' $$log; \
	rm -f $$log; exit $$status
	@$(MAKE) --no-print-directory fuzz-check
	@work=$$(mktemp -d); \
	$(MAKE) --no-print-directory fuzz-run FUZZ_SECONDS=$(FUZZ_TEST_SECONDS) FUZZ_WORK=$$work; \
	status=$$?; rm -rf $$work; exit $$status

# The soak (crates/cli/tests/soak.rs): the real daemon on AF_XDP in the DR lab for
# SOAK_SECONDS under HTTP on new connections, UDP questions, one long-lived TCP conversation
# and pktgen's SYNs from spoofed sources (XVS_SOAK_SYN_RATE a second, 1000 by default); it
# samples the daemon's RSS, the table's entries and each worker's UMEM frames and fails on
# growth, a frame leak or a lost request. `cargo test` alone runs a 60 s slice of it.
SOAK_SECONDS ?= 600
soak: deps toolchain
	SOAK_SECONDS=$(SOAK_SECONDS) $(CARGO) test -p xvs-cli --test soak -- --nocapture

# Installs only the Debian packages that are missing, so a ready machine pays nothing.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq $$missing; \
	fi

# rustfmt and clippy are rustup components; add them if this toolchain lacks them.
toolchain:
	@for c in rustfmt clippy; do \
	  rustup component list --installed 2>/dev/null | grep -q "^$$c" || rustup component add $$c; \
	done

bench:
	$(CARGO) bench -p xvs-benches

# Fuzzing (fuzz/, its own cargo workspace): libFuzzer through cargo-fuzz on the stable
# toolchain, by default without a sanitizer (they need a `-Z` flag) and with debug
# assertions and overflow checks on. Targets: the frame parser against etherparse, and the
# in-memory pipeline (one batch; a sequence over time, two workers, reloads) whose every
# output frame is checked with etherparse and every drop found in the counters.
# `make test` runs each for FUZZ_TEST_SECONDS from the committed seeds (fuzz/corpus/) in a
# scratch corpus; `make fuzz` runs each for FUZZ_SECONDS and keeps what it finds in
# fuzz/corpus-work/ (not committed) for the next run. A crash fails the target, its input
# under fuzz/artifacts/<target>/ (replay: fuzz/target/*/release/<target> <file>).
FUZZ_TARGETS := parse pipeline pipeline_sequence
FUZZ_TEST_SECONDS ?= 40
FUZZ_SECONDS ?= 600
FUZZ_WORK ?= fuzz/corpus-work
# FUZZ_SANITIZER=address: AddressSanitizer (conntrack's zeroed tables are `unsafe`), through
# RUSTC_BOOTSTRAP=1 for its `-Z` flag, built in fuzz/target-address; runs about 5x slower.
FUZZ_SANITIZER ?= none
FUZZ_FLAGS = --sanitizer $(FUZZ_SANITIZER) --debug-assertions \
	$(if $(filter none,$(FUZZ_SANITIZER)),,--target-dir fuzz/target-$(FUZZ_SANITIZER))
FUZZ_ENV = $(if $(filter none,$(FUZZ_SANITIZER)),,RUSTC_BOOTSTRAP=1)

# cargo-fuzz is a cargo subcommand from crates.io: installed when missing.
fuzz-tool:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked

fuzz: deps toolchain fuzz-tool fuzz-check
	@$(MAKE) --no-print-directory fuzz-run FUZZ_ARGS="-max_len=8192"

# The fuzz crate's own clippy and unit tests (its input format, repairs, seeds through the
# targets), built in the main target directory to share its dependencies.
fuzz-check:
	CARGO_TARGET_DIR=$(CURDIR)/target $(CARGO) clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
	CARGO_TARGET_DIR=$(CURDIR)/target $(CARGO) test -q --manifest-path fuzz/Cargo.toml

fuzz-run:
	$(FUZZ_ENV) $(CARGO) fuzz build $(FUZZ_FLAGS)
	@mkdir -p fuzz/artifacts; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_WORK)/$$t; log=fuzz/artifacts/$$t.log; \
	  echo "fuzz $$t for $(FUZZ_SECONDS) s (log: $$log)"; \
	  if $(FUZZ_ENV) $(CARGO) fuzz run $(FUZZ_FLAGS) $$t $(FUZZ_WORK)/$$t fuzz/corpus/$$t -- \
	      -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 $(FUZZ_ARGS) \
	      >$$log 2>&1; then \
	    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec)' $$log; \
	  else \
	    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|^ +([0-9]+: |at )' $$log | tail -60; exit 1; \
	  fi; \
	done

# Rewrites the committed seed corpus from fuzz/src/seeds.rs.
fuzz-seeds:
	$(CARGO) run --manifest-path fuzz/Cargo.toml --example seeds

# Benchmarks of xvs-pktgen (BENCHMARKS.md); their extra Debian packages are installed only here.
BENCH_DEB_PACKAGES := valgrind nftables
PKTGEN = $${CARGO_TARGET_DIR:-target}/release/xvs-pktgen

.PHONY: bench-deps bench-instructions bench-compare

bench-deps:
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(BENCH_DEB_PACKAGES)"

# Instructions per packet of the in-memory pipeline under callgrind (stable on a shared machine).
bench-instructions: deps toolchain bench-deps
	$(CARGO) build --release -p xvs-pktgen
	pktgen/scripts/bench-instructions.sh $(PKTGEN)

# xvs vs its I/O ceiling (xvs run --io-ceiling) vs the kernel (nftables DNAT, numgen round
# robin) in the lab's NAT topology: alternating rounds, Mpps and CPU per packet, latency at the
# real servers, TCP connections per second, 64 MiB HTTP downloads (root; about 100 s).
COMPARE_ARGS ?= --rounds 3 --seconds 5 --cps-seconds 3 --bulk-rounds 3
bench-compare: deps toolchain bench-deps
	$(CARGO) build --release -p xvs-pktgen -p xvs-cli --bins
	$(PKTGEN) compare $(COMPARE_ARGS)

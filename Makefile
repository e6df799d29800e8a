# xvs: the two commands README.md promises, plus helpers they use.
#   make lab    installs what is missing, builds xvs and runs the seed DR lab (root).
#   make test   installs what is missing, then fmt check, clippy (-D warnings), all tests (root).
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

.PHONY: lab test deps toolchain fmt clippy unit bench

# The seed lab: client, router, director (xvs on AF_XDP) and two real servers in network
# namespaces; HTTP through the VIP. Other labs: make lab LAB_ARGS="--mode nat --scheduler wrr",
# or N directors behind ECMP and BGP: make lab LAB_ARGS="--scale-out 3".
LAB_ARGS ?= --mode dr --scheduler rr --requests 20
lab: deps toolchain
	$(CARGO) build -p xvs-cli --bins
	$(CARGO) run -q -p xvs-cli --bin xvs -- lab $(LAB_ARGS)

test: deps toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@log=$$(mktemp); set -o pipefail; $(CARGO) test --workspace 2>&1 | tee $$log; status=$$?; \
	awk '/^test result:/ {p += $$4; f += $$6} END {printf "summary: %d passed, %d failed\n", p, f}' $$log; \
	rm -f $$log; exit $$status

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

# xvs vs the kernel (nftables DNAT, numgen round robin) in the lab's NAT topology: alternating
# rounds, Mpps and CPU per packet, latency at the real servers, TCP connections per second
# (root; about 80 s).
COMPARE_ARGS ?= --rounds 3 --seconds 5 --cps-seconds 3
bench-compare: deps toolchain bench-deps
	$(CARGO) build --release -p xvs-pktgen -p xvs-cli --bins
	$(PKTGEN) compare $(COMPARE_ARGS)

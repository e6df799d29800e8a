# xvs: the two commands README.md promises, plus helpers they use.
#   make test   installs what is missing, then fmt check, clippy (-D warnings), all tests.
SHELL := /bin/bash
CARGO ?= cargo

# Debian packages the build needs (checked with dpkg, installed only when missing).
DEB_PACKAGES := build-essential pkg-config
# Frame I/O (crates/dataplane): clang builds the XDP filter and libxdp's BPF objects, m4/libelf/zlib
# build libxdp; iproute2, ethtool and ping drive the veth/namespace tests.
DEB_PACKAGES += clang llvm m4 libelf-dev zlib1g-dev iproute2 ethtool iputils-ping

.PHONY: test deps toolchain fmt clippy unit bench

test: deps toolchain
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

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

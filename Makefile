# Pylon: `make run` starts the gateway in front of the demo services; `make test` runs
# every test. Both install what a fresh Debian machine is missing.

SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
DESTDIR ?=
CONF ?= conf/pylon.toml

# Debian packages the build needs: cmake for Pingora's zlib-ng, OpenSSL headers for its TLS.
BUILD_PACKAGES := cmake pkg-config libssl-dev gcc g++ make curl
# The load harness's contenders and load generators.
BENCH_PACKAGES := wrk nginx-light haproxy nghttp2-client gnuplot-nox

.PHONY: all build release run test lint deps bench-deps bench microbench install clean

all: build

# Install what is missing; apt-get runs only when something is.
deps:
	@bash scripts/ensure-packages.sh $(BUILD_PACKAGES)
	@command -v $(CARGO) >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs"; exit 1; }

bench-deps: deps
	@bash scripts/ensure-packages.sh $(BENCH_PACKAGES)

build: deps
	$(CARGO) build

release: deps
	$(CARGO) build --release --bins

# The gateway on :5000 (PORT overrides) in front of the demo services on :7002-7004.
run: release
	@target/release/demo_upstreams & demo=$$!; \
	trap 'kill $$demo 2>/dev/null' EXIT INT TERM; \
	sleep 0.3; \
	target/release/pylon -c $(CONF)

test: deps
	$(CARGO) test --all-targets

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean

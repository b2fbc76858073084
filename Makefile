# Pylon: `make run` starts the gateway in front of the demo services; `make test` runs
# every test. Both install what a fresh Debian machine is missing.

SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
DESTDIR ?=
CONF ?= conf/pylon.toml

# Debian packages the build needs: cmake for Pingora's zlib-ng, OpenSSL headers for its TLS.
BUILD_PACKAGES := cmake pkg-config libssl-dev gcc g++ make curl
# The load harness (benches/load.py): wrk drives Pylon, nginx and HAProxy; nginx is also
# the upstream; matplotlib draws the chart. An nginx already installed (nginx, nginx-full,
# ...) is used as it is; otherwise nginx-light.
BENCH_NGINX := $(if $(shell command -v nginx || ls /usr/sbin/nginx 2>/dev/null),,nginx-light)
BENCH_PACKAGES := wrk $(BENCH_NGINX) haproxy python3 python3-matplotlib

.PHONY: all build release run test lint deps bench-deps bench microbench install clean

all: build

# Install what is missing; apt-get runs only when something is.
deps:
	@bash scripts/ensure-packages.sh $(BUILD_PACKAGES)
	@command -v $(CARGO) >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs"; exit 1; }

bench-deps: deps
	@bash scripts/ensure-packages.sh $(BENCH_PACKAGES)

# Pylon against nginx and HAProxy doing the same work, on this machine; results in
# benches/results/latest.{md,json,png}. BENCH_ARGS="--quick" for a smoke test,
# "--only pylon,nginx", "--skip-scaling", "--duration 20 --rounds 3", "--soak 600".
bench: bench-deps release
	python3 benches/load.py $(BENCH_ARGS)

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

# Pylon: `make run` starts the gateway in front of the demo services; `make test` runs
# every test. Both install what a fresh Debian machine is missing.

SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
CONF ?= conf/pylon.toml

# Debian packages the build needs: cmake for Pingora's zlib-ng, OpenSSL headers for its TLS.
BUILD_PACKAGES := cmake pkg-config libssl-dev gcc g++ make curl
# The tests: systemd-analyze verifies the unit file (systemd need not be running),
# logrotate runs the shipped rotation against a real gateway;
# chromium and node (with playwright-core from npm, in tests/browser) drive the admin
# status page; openssl's s_client checks TLS session resumption; redis-server (and
# redis-cli, from redis-tools) is the shared rate-limit store of several gateways: one
# node, over TLS, a Redis Cluster and a Sentinel failover. scripts/ensure-autobahn.sh
# installs the Autobahn|Testsuite (PyPI, Python 2.7 only) under pyenv's 2.7.18 for
# tests/autobahn.rs; h2spec, which no registry carries, comes from ../shared/tools
# (scripts/check-h2spec.sh says whether it is there). scripts/ensure-otel.sh makes the venv
# target/otel-venv (python3-venv, then OpenTelemetry's proto, SDK and OTLP/HTTP exporter
# from PyPI) for tests/tracing.rs's OTLP receiver and its instrumented client and upstream.
# scripts/ensure-schemathesis.sh makes the venv target/schemathesis-venv (schemathesis from
# PyPI) with which tests/openapi.rs checks the admin API against admin/openapi.yaml.
# scripts/ensure-redbot.sh makes the venv target/redbot-venv (REDbot from PyPI) with which
# tests/cache.rs checks a cached route's headers.
TEST_PACKAGES := systemd logrotate chromium nodejs openssl redis-server redis-tools
# The load harness (benches/load.py): wrk drives Pylon, its floor (target/release/pylon-floor),
# nginx, HAProxy, Caddy and the tutorial's Node gateway (benches/tutorial: node, and its
# packages from npm); nginx is also the upstream; matplotlib draws the chart; h2load
# (nghttp2-client) drives the HTTP/2 runs; openssl makes the certificate and the JWT keys.
# benches/instructions.sh counts with valgrind (callgrind) under h2load. An nginx already
# installed (nginx, nginx-full, ...) is used as it is; otherwise nginx-light. Debian's caddy
# package also enables its own caddy.service on port 80 where systemd runs; the harness
# starts its own Caddy (`systemctl disable --now caddy` if the system's one is unwanted).
BENCH_NGINX := $(if $(shell command -v nginx || ls /usr/sbin/nginx 2>/dev/null),,nginx-light)
BENCH_PACKAGES := wrk $(BENCH_NGINX) haproxy caddy nodejs openssl python3 python3-matplotlib valgrind nghttp2-client redis-server

.PHONY: all build release run test lint deps bench-deps bench microbench install clean

all: build

# Install what is missing; apt-get runs only when something is.
deps:
	@bash scripts/ensure-packages.sh $(BUILD_PACKAGES)
	@command -v $(CARGO) >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs"; exit 1; }

bench-deps: deps
	@bash scripts/ensure-packages.sh $(BENCH_PACKAGES)
	@command -v npm >/dev/null || bash scripts/ensure-packages.sh npm
	@[ -d benches/tutorial/node_modules/http-proxy-middleware ] || npm ci --prefix benches/tutorial --no-audit --no-fund

# Pylon against its floor, nginx, HAProxy, Caddy and the tutorial's Node gateway doing the
# same work, then the scenarios (routes, clients, bodies, the gateway's own answers, auth,
# upload, HTTPS and HTTP/2, new TLS connections, the response cache's hits), on this
# machine; results in benches/results/latest.{md,json,png}. BENCH_ARGS="--quick" for a
# smoke test (every scenario, briefly), "--only pylon,nginx", "--skip-scaling" (no
# scenarios), "--scenarios auth,cache", "--duration 20 --rounds 3", "--soak 600".
# Then benches/cluster.py: three gateways sharing one budget in Redis against local
# counts (benches/results/cluster.md), and 1,000 to 100,000 clients over them with a hot
# one in the crowd (benches/results/cluster-clients.md); CLUSTER_ARGS="--duration 5" for a
# shorter run, "--modes clients" for the sweep alone.
# Then benches/idle_connections.py: memory per idle keep-alive connection, TLS connection
# and WebSocket, Pylon against nginx and the floor (benches/results/connections-latest.md).
# Then benches/instructions.sh (callgrind) for Pylon without [tracing], with it and no
# request sampled, and with every request's spans exported (benches/results/tracing.md).
# Then the instructions per request of a proxied request and of a cache hit (CACHE=1),
# Pylon and nginx (benches/results/cache-instructions-latest.txt; benches/results/cache.md
# has a run of both with the load scenario's figures).
# Then benches/fleet.py: three gateways in a fleet, the time from a PUT /config to the
# last node serving it over 20 changes, then the instructions per request with the policy
# in the file and in the fleet's store (benches/results/fleet-latest.md).
# Last, benches/websocket.py: WebSocket throughput (bulk bytes each way over one and eight
# connections, and Autobahn's 9.* cases), direct, through Pylon and through nginx;
# BEFORE_BIN=path adds another Pylon build (benches/results/websocket-latest.md).
bench: bench-deps release
	python3 benches/load.py $(BENCH_ARGS)
	python3 benches/cluster.py $(CLUSTER_ARGS)
	python3 benches/idle_connections.py --gateway pylon,nginx,floor --modes plain,tls,ws,h2idle --out benches/results/connections-latest.md $(CONNECTIONS_ARGS)
	@{ echo "tracing off:"; ONLY=pylon bash benches/instructions.sh | tail -1; \
	  echo "tracing on, not sampled:"; TRACING=unsampled ONLY=pylon bash benches/instructions.sh | tail -1; \
	  echo "tracing on, every request sampled and exported:"; TRACING=sampled ONLY=pylon bash benches/instructions.sh | tail -1; } | tee benches/results/tracing-latest.txt
	@{ echo "proxied (no cache):"; ONLY=pylon,nginx bash benches/instructions.sh | tail -3; \
	  echo "cache hits (CACHE=1):"; CACHE=1 ONLY=pylon,nginx bash benches/instructions.sh | tail -3; } | tee benches/results/cache-instructions-latest.txt
	python3 benches/fleet.py --out benches/results/fleet-latest.md
	@{ echo; echo "Instructions per request (benches/instructions.sh, IDLE_MATCH=1), the policy in the file and in a fleet's store:"; echo; \
	  echo '```'; echo "file:"; IDLE_MATCH=1 ONLY=pylon bash benches/instructions.sh | tail -1; \
	  echo "fleet:"; FLEET=1 IDLE_MATCH=1 ONLY=pylon bash benches/instructions.sh | tail -1; echo '```'; } | tee -a benches/results/fleet-latest.md
	python3 benches/websocket.py --out benches/results/websocket-latest.md

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
	@bash scripts/ensure-packages.sh $(TEST_PACKAGES)
	@command -v npm >/dev/null || bash scripts/ensure-packages.sh npm
	@[ -d tests/browser/node_modules/playwright-core ] || npm ci --prefix tests/browser --no-audit --no-fund
	@bash scripts/ensure-autobahn.sh
	@bash scripts/ensure-otel.sh
	@bash scripts/ensure-schemathesis.sh
	@bash scripts/ensure-redbot.sh
	@bash scripts/check-h2spec.sh
	$(CARGO) test --all-targets

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Criterion micro-benchmarks (route lookup, rate limit, headers, log lines).
microbench: deps
	$(CARGO) bench --bench micro

# The binary (stripped: 18 MB instead of 88), the systemd unit, its user, the logrotate
# file and /etc/pylon/pylon.toml (kept if it exists; logs to /var/log/pylon).
# DESTDIR and PREFIX work as usual; without DESTDIR the user is created and systemd told.
install: release
	install -Dm755 -s target/release/pylon $(DESTDIR)$(BINDIR)/pylon
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|@BINDIR@|$(BINDIR)|g' systemd/pylon.service > $(DESTDIR)$(UNITDIR)/pylon.service
	chmod 644 $(DESTDIR)$(UNITDIR)/pylon.service
	install -Dm644 systemd/pylon.sysusers $(DESTDIR)$(SYSUSERSDIR)/pylon.conf
	install -Dm644 systemd/pylon.logrotate $(DESTDIR)$(SYSCONFDIR)/logrotate.d/pylon
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/pylon/pylon.toml ]; then \
	  echo "keeping the existing $(DESTDIR)$(SYSCONFDIR)/pylon/pylon.toml"; \
	else \
	  install -d $(DESTDIR)$(SYSCONFDIR)/pylon; \
	  sed -e 's|^pid_file = .*|pid_file = "/run/pylon/pylon.pid"|' \
	      -e 's|^upgrade_sock = .*|upgrade_sock = "/run/pylon/upgrade.sock"\nerror_log = "/var/log/pylon/error.log"|' \
	      -e 's|^path = "-"|path = "/var/log/pylon/access.log"|' \
	      conf/pylon.toml > $(DESTDIR)$(SYSCONFDIR)/pylon/pylon.toml; \
	  chmod 644 $(DESTDIR)$(SYSCONFDIR)/pylon/pylon.toml; \
	fi
	@if [ -z "$(DESTDIR)" ]; then \
	  if command -v systemd-sysusers >/dev/null; then systemd-sysusers $(SYSUSERSDIR)/pylon.conf; \
	  elif ! id pylon >/dev/null 2>&1; then useradd --system --no-create-home --shell /usr/sbin/nologin pylon; fi; \
	  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	fi

clean:
	$(CARGO) clean

#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable whatever else the
# machine is doing, so it shows what a change to the request path costs.
#
#   benches/instructions.sh [REQUESTS] [PATH]     (default 2000 requests of /api/small)
#   PYLON_BIN=path/to/pylon benches/instructions.sh   (another build, for before/after)
#   JWT=1 benches/instructions.sh 2000 /jwt/small      (an RS256 route, one reused token;
#                                                     JWT_CACHE_TTL=0s: without the cache)
#
# Runs target/release/pylon (threads = 1, full policy: rate limit, security headers, CORS,
# combined access log to a file) under callgrind in front of an nginx upstream, once with
# no requests and once with REQUESTS keep-alive requests from h2load, and prints
# (Ir with requests - Ir without) / REQUESTS.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-2000}
path=${2:-/api/small}
for cmd in valgrind nginx h2load; do
  command -v "$cmd" >/dev/null || { echo "instructions.sh needs $cmd" >&2; exit 1; }
done
bin=${PYLON_BIN:-target/release/pylon}
[ -x "$bin" ] || { echo "build first: cargo build --release (or set PYLON_BIN)" >&2; exit 1; }

tmp=$(mktemp -d)
cleanup() {
  [ -f "$tmp/up.pid" ] && kill "$(cat "$tmp/up.pid")" 2>/dev/null || true
  pkill -f "callgrind-out-file=$tmp" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

up_port=18190
gw_port=18191
cat > "$tmp/up.conf" <<CONF
worker_processes 1;
pid $tmp/up.pid;
error_log $tmp/up.err;
daemon on;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$up_port;
    keepalive_requests 1000000;
    location / { return 200 "hello, world\n"; }
  }
}
CONF
nginx -c "$tmp/up.conf"

cat > "$tmp/pylon.toml" <<CONF
[server]
listen = ["127.0.0.1:$gw_port"]
threads = 1
pid_file = "$tmp/pylon.pid"
upgrade_sock = "$tmp/pylon.sock"
[access_log]
path = "${ACCESS_LOG:-$tmp/access.log}"
[rate_limit]
requests = 1000000000
window = "1m"
[[routes]]
prefix = "/api"
upstreams = ["127.0.0.1:$up_port"]
CONF
# ALL_POLICIES=1: also a route with every route policy (body limit, methods, client
# lists, header transforms), to measure as benches/instructions.sh 2000 /all/small
if [ -n "${ALL_POLICIES:-}" ]; then
  cat >> "$tmp/pylon.toml" <<CONF
[[routes]]
prefix = "/all"
upstreams = ["127.0.0.1:$up_port"]
max_body = "1m"
methods = ["GET", "POST"]
allow = ["127.0.0.0/8", "10.0.0.0/8", "2001:db8::/32"]
deny = ["10.1.0.0/16"]
request_headers = { set = { "X-Api-Version" = "2", "X-Client-Ip" = "{client_ip}" }, remove = ["Cookie"] }
response_headers = { set = { "Cache-Control" = "no-store" }, remove = ["X-Internal-Trace"] }
CONF
fi

# JWT=1: also a route /jwt behind an RS256 authenticator, and every request carries the
# same valid token (benches/instructions.sh 2000 /jwt/small): what a reused token costs
# against /api/small
header=()
if [ -n "${JWT:-}" ]; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/jwt.key" 2>/dev/null
  openssl pkey -in "$tmp/jwt.key" -pubout -out "$tmp/jwt.pub"
  b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
  jwt_head=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
  jwt_body=$(printf '{"sub":"bench","exp":%d}' $(( $(date +%s) + 86400 )) | b64url)
  jwt_sig=$(printf '%s.%s' "$jwt_head" "$jwt_body" | openssl dgst -sha256 -sign "$tmp/jwt.key" -binary | b64url)
  header=(-H "authorization: Bearer $jwt_head.$jwt_body.$jwt_sig")
  cache_line=""
  [ -n "${JWT_CACHE_TTL:-}" ] && cache_line="cache_ttl = \"$JWT_CACHE_TTL\""
  cat >> "$tmp/pylon.toml" <<CONF
[auth.bench]
type = "jwt"
algorithms = ["RS256"]
public_key_file = "$tmp/jwt.pub"
$cache_line
[[routes]]
prefix = "/jwt"
upstreams = ["127.0.0.1:$up_port"]
auth = "bench"
CONF
fi

# Ir of one run of pylon that serves $1 requests
measure() {
  local n=$1 out="$tmp/cg.$1"
  RUST_LOG=error valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" -c "$tmp/pylon.toml" >/dev/null 2>"$tmp/vg.$n" &
  local pid=$!
  for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$gw_port/" 2>/dev/null && break
    sleep 0.1
  done
  if [ "$n" -gt 0 ]; then
    h2load --h1 -n "$n" -c 4 -m 1 "${header[@]}" "http://127.0.0.1:$gw_port$path" >"$tmp/h2load.$n" 2>&1
    grep -q "$n done" "$tmp/h2load.$n" || { cat "$tmp/h2load.$n" >&2; exit 1; }
  fi
  kill -INT "$pid"
  wait "$pid" || true
  grep "summary:\|totals:" "$out" | awk '{print $2}' | head -1
}

# the readiness probe (one 404) happens in both runs and cancels out
base=$(measure 0)
with=$(measure "$requests")
echo "requests: $requests of $path"
echo "instructions without requests: $base"
echo "instructions with requests:    $with"
echo "instructions per request:      $(( (with - base) / requests ))"
if [ -n "${KEEP:-}" ]; then cp "$tmp/cg.$requests" "$KEEP"; echo "callgrind profile: $KEEP"; fi

#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: repeatable whatever else the
# machine is doing, so it shows what a change to the request path costs.
#
#   benches/instructions.sh [REQUESTS] [PATH]     (default 2000 requests of /api/small)
#   PYLON_BIN=path/to/pylon benches/instructions.sh   (another build, for before/after)
#   ONLY=pylon benches/instructions.sh               (pylon, floor, nginx: any of them)
#   UPSTREAM_IDLE=off benches/instructions.sh        (timeouts.upstream_idle for Pylon)
#   benches/instructions.sh 200 /api/body/1m          (1k, 64k, 1m: response bodies)
#   UPLOAD=1m benches/instructions.sh 200 /api/upload  (each request POSTs 1 MiB)
#   APIKEY=1 benches/instructions.sh 2000 /key/small  (an API-key route, the key on every request)
#   TLS=1 benches/instructions.sh                    (HTTP/1.1 over TLS 1.3, pylon and the floor;
#                                                     the 4 handshakes are in the count too)
#   TRACING=unsampled benches/instructions.sh        ([tracing] with sampling = 0; TRACING=sampled:
#                                                     every request's spans exported)
#   FLEET=1 benches/instructions.sh                  (the policy document from a fleet's store:
#                                                     a local redis-server, the node subscribed)
#   IDLE_MATCH=1 benches/instructions.sh             (the run without requests lasts as long
#                                                     as the one with them: per-second work
#                                                     such as a fleet's beat cancels out)
#   JWT=1 benches/instructions.sh 2000 /jwt/small      (an RS256 route, one reused token;
#                                                     JWT_CACHE_TTL=0s: without the cache;
#                                                     JWT_ALG=ES256: an ES256 route)
#   CACHE=1 benches/instructions.sh                  (the response cache's hit path: Pylon's
#                                                     /api with cache = { ttl = "1h" }, nginx
#                                                     with proxy_cache and proxy_cache_valid
#                                                     200 1h; one request fills the cache
#                                                     before the counted ones, which are all
#                                                     hits, checked; the floor has no cache)
#
# Runs three proxies under callgrind in front of the same nginx upstream, one after the
# other, each once with no requests and once with REQUESTS keep-alive requests from h2load,
# and prints (Ir with requests - Ir without) / REQUESTS for each, side by side:
# - pylon: target/release/pylon, threads = 1, full policy (rate limit, security headers,
#   CORS, X-Request-Id, X-Forwarded-*, combined access log to a file);
# - floor: target/release/pylon-floor (benches/floor.rs), a bare Pingora proxy with the
#   same allocator and profile: the engine's cost, below which Pylon cannot go;
# - nginx: benches/peers/nginx.conf, the same policy, one process (master_process off).
# Pylon's own work is pylon - floor.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-2000}
path=${2:-/api/small}
for cmd in valgrind nginx h2load; do
  command -v "$cmd" >/dev/null || { echo "instructions.sh needs $cmd" >&2; exit 1; }
done
bin=${PYLON_BIN:-target/release/pylon}
floor=${FLOOR_BIN:-target/release/pylon-floor}
only=${ONLY:-pylon,floor,nginx}
wants() { [[ ",$only," == *",$1,"* ]]; }
for who in pylon floor; do
  b=$bin; [ $who = floor ] && b=$floor
  if wants $who && [ ! -x "$b" ]; then
    echo "build first: cargo build --release --bins (or set PYLON_BIN, FLOOR_BIN)" >&2; exit 1
  fi
done

tmp=$(mktemp -d)
cleanup() {
  [ -f "$tmp/up.pid" ] && kill "$(cat "$tmp/up.pid")" 2>/dev/null || true
  [ -f "$tmp/sink.pid" ] && kill "$(cat "$tmp/sink.pid")" 2>/dev/null || true
  [ -f "$tmp/redis.pid" ] && kill "$(cat "$tmp/redis.pid")" 2>/dev/null || true
  pkill -f "callgrind-out-file=$tmp" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

up_port=18190
gw_port=18191
floor_port=18192
nginx_port=18193
pylon_tls_port=18194
floor_tls_port=18195
# CACHE=1: the upstream logs its requests (none should come during the counted hits)
up_log=off
[ -n "${CACHE:-}" ] && up_log="$tmp/up.access"
cat > "$tmp/up.conf" <<CONF
worker_processes 1;
pid $tmp/up.pid;
error_log $tmp/up.err;
daemon on;
events { worker_connections 1024; }
http {
  access_log $up_log;
  server {
    listen 127.0.0.1:$up_port;
    keepalive_requests 1000000;
    location / { return 200 "hello, world\n"; }
    # bodies of 1 KiB, 64 KiB and 1 MiB, with the route's prefix stripped or not
    location /body/ { root $tmp/www; }
    location /api/body/ { alias $tmp/www/body/; }
    # uploads are read whole, then answered
    location /upload { client_max_body_size 2m; client_body_buffer_size 2m; proxy_pass http://127.0.0.1:$up_port/sink; }
    location /api/upload { client_max_body_size 2m; client_body_buffer_size 2m; proxy_pass http://127.0.0.1:$up_port/sink; }
    location /sink { return 200 "stored\n"; }
  }
}
CONF
# nginx's workers (nobody) read the bodies from here
chmod 755 "$tmp"
mkdir -p "$tmp/www/body"
head -c 1024 /dev/zero | tr '\0' x > "$tmp/www/body/1k"
head -c 65536 /dev/zero | tr '\0' x > "$tmp/www/body/64k"
head -c 1048576 /dev/zero | tr '\0' x > "$tmp/www/body/1m"
nginx -c "$tmp/up.conf"

timeouts=""
[ -n "${UPSTREAM_IDLE:-}" ] && timeouts=$(printf '[timeouts]\nupstream_idle = "%s"' "$UPSTREAM_IDLE")
# CACHE=1: Pylon's store and /api cached for an hour; nginx's cache in files under $tmp,
# /api cached for an hour, X-Cache-Status telling a hit (at the server level: an add_header
# in a location would drop the server's security headers there)
cache_section="" route_cache="" nginx_http="" nginx_server=""
if [ -n "${CACHE:-}" ]; then
  cache_section=$(printf '[cache]\nmemory = "256m"')
  route_cache='cache = { ttl = "1h" }'
  nginx_http="    proxy_cache_path $tmp/nginx-cache levels=1:2 keys_zone=bench:16m max_size=256m inactive=2h use_temp_path=off;"
  nginx_server='        proxy_cache bench;\n        proxy_cache_valid 200 1h;\n        add_header X-Cache-Status $upstream_cache_status always;'
fi
cat > "$tmp/pylon.toml" <<CONF
[server]
listen = ["127.0.0.1:$gw_port"]
threads = 1
pid_file = "$tmp/pylon.pid"
upgrade_sock = "$tmp/pylon.sock"
[access_log]
path = "${ACCESS_LOG:-$tmp/access.log}"
$timeouts
$cache_section
[rate_limit]
requests = 1000000000
window = "1m"
[[routes]]
prefix = "/api"
upstreams = ["127.0.0.1:$up_port"]
$route_cache
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

# TRACING=unsampled: a [tracing] section under which no request is sampled (sampling = 0:
# the trace context is still made and sent upstream, no span); TRACING=sampled: every
# request recorded, and its spans exported to a local OTLP/HTTP sink (python3) that
# answers 200, so the count holds the spans' making, encoding and sending
if [ -n "${TRACING:-}" ]; then
  case "$TRACING" in
    unsampled) sampling=0.0 ;;
    sampled) sampling=1.0 ;;
    *) echo "TRACING is unsampled or sampled" >&2; exit 1 ;;
  esac
  sink_port=18196
  python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' "$sink_port" &
  echo $! > "$tmp/sink.pid"
  cat >> "$tmp/pylon.toml" <<CONF
[tracing]
endpoint = "http://127.0.0.1:$sink_port/v1/traces"
sampling = $sampling
CONF
fi

# JWT=1: also a route /jwt behind an RS256 authenticator, and every request carries the
# same valid token (benches/instructions.sh 2000 /jwt/small): what a reused token costs
# against /api/small
header=()
if [ -n "${UPLOAD:-}" ]; then
  [ -f "$tmp/www/body/$UPLOAD" ] || { echo "UPLOAD is 1k, 64k or 1m" >&2; exit 1; }
  header=(-d "$tmp/www/body/$UPLOAD")
fi
if [ -n "${JWT:-}" ]; then
  alg=${JWT_ALG:-RS256}
  b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
  case $alg in
    RS256) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/jwt.key" 2>/dev/null ;;
    ES256) openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/jwt.key" ;;
    *) echo "JWT_ALG is RS256 or ES256" >&2; exit 1 ;;
  esac
  openssl pkey -in "$tmp/jwt.key" -pubout -out "$tmp/jwt.pub"
  jwt_head=$(printf '{"alg":"%s","typ":"JWT"}' "$alg" | b64url)
  jwt_body=$(printf '{"sub":"bench","exp":%d}' $(( $(date +%s) + 86400 )) | b64url)
  printf '%s.%s' "$jwt_head" "$jwt_body" | openssl dgst -sha256 -sign "$tmp/jwt.key" -binary > "$tmp/jwt.sig"
  if [ "$alg" = ES256 ]; then
    # a JWS carries r and s as two 32-byte numbers, not openssl's DER sequence
    openssl asn1parse -inform DER -in "$tmp/jwt.sig" | awk -F: '/INTEGER/ {printf "%064s", $NF}' |
      tr ' ' 0 | python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.stdin.read().strip()))' > "$tmp/jwt.raw"
    mv "$tmp/jwt.raw" "$tmp/jwt.sig"
  fi
  jwt_sig=$(b64url < "$tmp/jwt.sig")
  header=(-H "authorization: Bearer $jwt_head.$jwt_body.$jwt_sig")
  cache_line=""
  [ -n "${JWT_CACHE_TTL:-}" ] && cache_line="cache_ttl = \"$JWT_CACHE_TTL\""
  cat >> "$tmp/pylon.toml" <<CONF
[auth.bench]
type = "jwt"
algorithms = ["$alg"]
public_key_file = "$tmp/jwt.pub"
$cache_line
[[routes]]
prefix = "/jwt"
upstreams = ["127.0.0.1:$up_port"]
auth = "bench"
CONF
fi

# the same policy in nginx: the load harness's config, one process, nothing else changed
sed -e "s|@@TMP@@|$tmp|g; s|@@NAME@@|policy|g; s|@@PORT@@|$nginx_port|g" \
    -e "s|@@UPSTREAM_PORT@@|$up_port|g; s|@@REALIP@@||" \
    -e "s|@@EXTRA_LOCATIONS@@|$nginx_server|; s|@@HTTP_EXTRA@@|$nginx_http|" \
    -e "s|^worker_processes .*|worker_processes 1;\nmaster_process off;|" \
    benches/peers/nginx.conf > "$tmp/policy.conf"
mkdir -p "$tmp/policy-tmp"

# APIKEY=1: also a route /key behind an API key (a header, its SHA-256 in the config),
# and every request carries the key (benches/instructions.sh 2000 /key/small)
if [ -n "${APIKEY:-}" ]; then
  key=bench-key-0123456789abcdef
  header=(-H "x-api-key: $key")
  cat >> "$tmp/pylon.toml" <<CONF
[auth.key]
type = "api_key"
header = "X-Api-Key"
keys = { bench = "sha256:$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)" }
[[routes]]
prefix = "/key"
upstreams = ["127.0.0.1:$up_port"]
auth = "key"
CONF
fi

# TLS=1: the same requests over TLS (HTTP/1.1, an ECDSA P-256 certificate) to Pylon's
# [tls] listener and the floor's --tls-listen; nginx's config here has no TLS listener
scheme=http
if [ -n "${TLS:-}" ]; then
  scheme=https
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
  cat >> "$tmp/pylon.toml" <<CONF
[tls]
listen = ["127.0.0.1:$pylon_tls_port"]
certificates = [{ cert = "$tmp/tls.crt", key = "$tmp/tls.key" }]
CONF
  if wants nginx; then
    echo "TLS=1 measures pylon and the floor only" >&2
    only=${only//nginx/}
  fi
fi

# FLEET=1: Pylon takes the same policy from a fleet's store instead of its file: the
# policy sections move into Redis (a local redis-server) and the file keeps [server],
# [access_log] and a [control] naming the store, so the node subscribes to the fleet's
# channel and writes its state every second while it serves
if [ -n "${FLEET:-}" ]; then
  command -v redis-server >/dev/null || { echo "FLEET=1 needs redis-server" >&2; exit 1; }
  redis_port=18197
  redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" \
    --daemonize yes --pidfile "$tmp/redis.pid" >/dev/null
  python3 - "$tmp/pylon.toml" "$tmp/policy.toml" "$redis_port" <<'PY'
import re, sys
node, policy, part = [], [], None
for line in open(sys.argv[1]).read().splitlines(keepends=True):
    m = re.match(r"\s*\[\[?\s*([A-Za-z_]+)", line)
    if m:
        part = node if m.group(1) in ("server", "access_log", "admin", "tls", "control", "metrics") else policy
    (part if part is not None else node).append(line)
with open(sys.argv[1], "w") as f:
    f.write("".join(node) + f'[control]\nstore = "redis://127.0.0.1:{sys.argv[3]}"\nfleet = "bench"\n')
with open(sys.argv[2], "w") as f:
    f.write("".join(policy))
PY
  for _ in $(seq 50); do redis-cli -p $redis_port PING >/dev/null 2>&1 && break; sleep 0.1; done
  key='{pylon:fleet:bench}:doc'
  redis-cli -p $redis_port -x HSET "$key" text < "$tmp/policy.toml" >/dev/null
  redis-cli -p $redis_port HSET "$key" hash "$(sha256sum < "$tmp/policy.toml" | cut -c1-16)" version 1 >/dev/null
fi

# Ir of one run of a proxy ($1: pylon, floor or nginx) that serves $2 requests
measure() {
  local who=$1 n=$2 out="$tmp/cg.$1.$2" port tls_port="" cmd
  case $who in
    pylon) port=$gw_port tls_port=$pylon_tls_port; cmd=("$bin" -c "$tmp/pylon.toml") ;;
    floor) port=$floor_port tls_port=$floor_tls_port
      cmd=("$floor" --listen "127.0.0.1:$floor_port" --upstream "127.0.0.1:$up_port" --threads 1)
      [ -n "${TLS:-}" ] && cmd+=(--tls-listen "127.0.0.1:$floor_tls_port" --cert "$tmp/tls.crt" --key "$tmp/tls.key") ;;
    nginx) port=$nginx_port; cmd=(nginx -c "$tmp/policy.conf") ;;
  esac
  # nginx's cache starts empty in each run, as Pylon's (in memory) does
  [ "$who" = nginx ] && rm -rf "$tmp/nginx-cache"
  RUST_LOG=error valgrind --tool=callgrind --callgrind-out-file="$out" \
    "${cmd[@]}" >/dev/null 2>"$tmp/vg.$who.$n" &
  local pid=$!
  for _ in $(seq 200); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
    sleep 0.1
  done
  # CACHE=1: one request fills the cache, in both runs so that it cancels out, and the
  # next is a hit (pylon: Cache-Status, nginx: X-Cache-Status; the floor has no cache)
  if [ -n "${CACHE:-}" ]; then
    curl -s -o /dev/null "${header[@]}" "http://127.0.0.1:$port$path"
    local hit=""
    case $who in
      pylon) hit='^cache-status: pylon; hit' ;;
      nginx) hit='^x-cache-status: HIT' ;;
    esac
    if [ -n "$hit" ]; then
      curl -s -D - -o /dev/null "${header[@]}" "http://127.0.0.1:$port$path" | tr -d '\r' |
        grep -qi "$hit" || { echo "$who: $path is not a cache hit after a fill" >&2; exit 1; }
    fi
  fi
  local up_before=0
  [ -n "${CACHE:-}" ] && up_before=$(wc -l < "$tmp/up.access")
  local began
  began=$(date +%s.%N)
  if [ "$n" -eq 0 ] && [ -n "${IDLE_MATCH:-}" ] && [ -f "$tmp/elapsed.$who" ]; then
    sleep "$(cat "$tmp/elapsed.$who")"
  fi
  if [ "$n" -gt 0 ]; then
    local target="http://127.0.0.1:$port$path"
    [ "$scheme" = https ] && target="https://127.0.0.1:$tls_port$path"
    h2load --h1 -n "$n" -c 4 -m 1 "${header[@]}" "$target" >"$tmp/h2load.$who.$n" 2>&1
    grep -q "$n done" "$tmp/h2load.$who.$n" ||
      { cat "$tmp/h2load.$who.$n" >&2; tail -20 "$tmp/vg.$who.$n" >&2; exit 1; }
    grep -q "status codes: $n 2xx" "$tmp/h2load.$who.$n" ||
      { echo "$who: not every answer was a 2xx" >&2; cat "$tmp/h2load.$who.$n" >&2; exit 1; }
    # every counted request a hit: none reached the upstream
    if [ -n "${CACHE:-}" ] && [ "$who" != floor ]; then
      local reached=$(( $(wc -l < "$tmp/up.access") - up_before ))
      [ "$reached" -eq 0 ] ||
        { echo "$who: $reached of the $n requests reached the upstream (not hits)" >&2; exit 1; }
    fi
    awk -v a="$began" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", b - a }' > "$tmp/elapsed.$who"
  fi
  # nginx ends at QUIT (graceful), the Pingora processes at INT
  if [ "$who" = nginx ]; then kill -QUIT "$pid"; else kill -INT "$pid"; fi
  wait "$pid" || true
  grep "summary:\|totals:" "$out" | awk '{print $2}' | head -1
}

# the readiness probe (one answer) happens in both runs and cancels out
echo "requests: $requests of $path (h2load, 4 keep-alive connections)"
if [ -n "${CACHE:-}" ]; then
  echo "CACHE=1: pylon and nginx answer every counted request from their cache (one fill"
  echo "before them; none reached the upstream); the floor has no cache: its count is a"
  echo "proxied request"
fi
printf '%-6s %16s %16s %14s\n' proxy "without requests" "with requests" "per request"
declare -A per
for who in pylon floor nginx; do
  wants "$who" || continue
  # the floor and nginx have no /jwt or /all route: they proxy the same path to the
  # same upstream without the route's policy
  # with IDLE_MATCH the run with requests goes first, and the one without lasts as long
  if [ -n "${IDLE_MATCH:-}" ]; then
    with=$(measure "$who" "$requests")
    base=$(measure "$who" 0)
  else
    base=$(measure "$who" 0)
    with=$(measure "$who" "$requests")
  fi
  per[$who]=$(( (with - base) / requests ))
  printf '%-6s %16s %16s %14s\n' "$who" "$base" "$with" "${per[$who]}"
  if [ -n "${KEEP:-}" ]; then
    cp "$tmp/cg.$who.$requests" "$KEEP.$who"; cp "$tmp/cg.$who.0" "$KEEP.$who.0"
    echo "callgrind profiles: $KEEP.$who (and .0, without requests)"
  fi
done
if [ -n "${per[pylon]:-}" ] && [ -n "${per[floor]:-}" ]; then
  echo "pylon's own work (pylon - floor): $(( per[pylon] - per[floor] ))"
fi

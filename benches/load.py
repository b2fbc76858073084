#!/usr/bin/env python3
"""Load benchmark: Pylon against its engine's floor, nginx, HAProxy, Caddy and the Node
gateway of the tutorials, doing the same policy work, on one machine.

    python3 benches/load.py [--duration S] [--rounds N] [--quick] [--only pylon,nginx]
                            [--skip-scaling] [--scenarios auth,h2,...] [--soak SECONDS]
                            [--out DIR] [--keep-tmp]

`make bench` builds the release binaries first and runs this with $(BENCH_ARGS).
PYLON_BIN=path and FLOOR_BIN=path run other builds (default target/release/pylon and
target/release/pylon-floor).

An nginx upstream (1 worker, fixed bodies) listens on 127.0.0.1:18080. Each contender
listens on its own loopback port and proxies /api to it with the prefix stripped, with
upstream keepalive, security headers, CORS, a request id, X-Forwarded-*, a per-client rate
limit that never triggers and a combined access log to a file:

    pylon     127.0.0.1:18081   benches/pylon.toml
    nginx     127.0.0.1:18082   benches/peers/nginx.conf
    haproxy   127.0.0.1:18083   benches/peers/haproxy.cfg
    floor     127.0.0.1:18086   FLOOR_BIN (benches/floor.rs): bare Pingora, upstream_peer
                                only, Pylon's threads; no policy, no prefix to strip (it is
                                asked for /small where the others get /api/small)
    caddy     127.0.0.1:18087   benches/peers/Caddyfile (no rate limit: not in Caddy's
                                standard modules; JSON access log)
    tutorial  127.0.0.1:18088   benches/tutorial/server.js: express, http-proxy-middleware,
                                cors, helmet, morgan, an in-memory per-IP counter; one Node
                                process, http-proxy's defaults (no upstream keep-alive)

wrk (-t2, HTTP/1.1 keep-alive, --latency) drives each at 10, 100 and 1,000 connections,
the contenders taking turns (A/B/C/A/B/C) for --rounds rounds; the tables show medians.
Then the scenarios, at 100 connections, their variants taking turns in the same way
(--scenarios picks some, --skip-scaling none; a scenario that fails is reported as such):

    routes           Pylon and nginx: 2 routes against 10,002
    clients          Pylon and nginx: 1 client address against 50,000 (X-Forwarded-For)
    bodies           Pylon, floor, nginx: empty, 1 KiB, 64 KiB and 1 MiB responses
    gateway_answers  Pylon and nginx: 404, 429 and preflight answers against a proxied
                     request
    auth             Pylon: an open route against JWT RS256, JWT ES256 and API-key routes,
                     one valid credential reused (keys and tokens made with openssl);
                     nginx: open against an API-key check
    upload           Pylon, floor, nginx: a 1 MiB POST (benches/upload.lua)
    h2               Pylon, floor, nginx with a TLS listener (self-signed ECDSA certificate):
                     HTTPS/1.1 keep-alive (wrk) and HTTP/2 (h2load, 10 connections x 10
                     streams); the floor's HTTP/2 only if it offers h2 by ALPN
    tls_connect      the same three: a new TLS connection for every request (wrk sending
                     Connection: close; full handshakes, wrk never resumes a session)
    cache            Pylon and nginx: a proxied GET against a cache hit of the same answer
                     (Pylon's [cache] and a route's cache = { ttl = "1h" }; nginx's
                     proxy_cache with proxy_cache_valid 200 1h), each cache filled and an
                     answer checked for a hit (Cache-Status, X-Cache-Status) before each
                     run, and the upstream's request count (stub_status) showing none
                     reached it during a hit run

--quick runs each scenario variant for 2 s. --soak runs Pylon alone and samples its memory.

Results go to benches/results/latest.{md,json,png} (--soak: soak.{md,json}); the Markdown
is printed too. Every process the harness starts is stopped at the end, on Ctrl-C and on
errors; every run is bounded in time; nothing leaves 127.0.0.1.
"""

import argparse
import base64
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

REPO = Path(__file__).resolve().parent.parent
BENCHES = REPO / "benches"
PEERS = BENCHES / "peers"
TUTORIAL = BENCHES / "tutorial"
# PYLON_BIN=path runs another build (an A/B of two builds of Pylon); FLOOR_BIN=path another
# build of the floor (benches/floor.rs).
PYLON = Path(os.environ.get("PYLON_BIN") or REPO / "target" / "release" / "pylon")
FLOOR = Path(os.environ.get("FLOOR_BIN") or REPO / "target" / "release" / "pylon-floor")

HOST = "127.0.0.1"
UPSTREAM_PORT = 18080
PORTS = {"pylon": 18081, "nginx": 18082, "haproxy": 18083, "floor": 18086, "caddy": 18087,
         "tutorial": 18088}
# the 10,000-route variants of the scaling runs
SCALED_PORTS = {"pylon": 18084, "nginx": 18085}
# the auth scenario's instances: an open route and the authenticated ones side by side
AUTH_PORTS = {"pylon": 18090, "nginx": 18091}
# the TLS scenarios' instances: (plain port, TLS port)
TLS_PORTS = {"pylon": (18092, 18093), "nginx": (18094, 18095), "floor": (18096, 18097)}
# the cache scenario's instances: the proxied route and a cached one side by side
CACHE_PORTS = {"pylon": 18098, "nginx": 18099}
# the cache scenario's cached prefix, its entries' lifetime and Pylon's store
CACHE_PREFIX = "/cached"
CACHE_TTL_S = 3600
CACHE_MEMORY = "256m"
# the API key of the auth scenario (Pylon keeps its SHA-256)
API_KEY = "bench-api-key-5f1c0e7a9b2d4c6e8f0a1b3c"
# h2load's connections and the streams each keeps in flight: 100 requests in flight, as
# in the other scenarios
H2_CONNECTIONS = 10
H2_STREAMS = 10
CONTENDERS = ("pylon", "floor", "nginx", "haproxy", "caddy", "tutorial")
# contenders without the policy work: they only proxy (the floor is what the engine costs)
BARE = ("floor",)
CONNECTIONS = (10, 100, 1000)
SCALING_CONNECTIONS = 100
EXTRA_ROUTES = 10_000
XFF_CLIENTS = 50_000
WRK_THREADS = 2
WRK_TIMEOUT = "5s"
SMALL_BODY = b"hello, world\n"
# the upload scenario's body (benches/upload.lua sends the same size)
UPLOAD_BODY = b"0123456789abcdef" * 65536
BODY_SIZES = {"empty": 0, "1k": 1024, "64k": 64 * 1024, "1m": 1024 * 1024}
# After each run, before reading CPU time and log sizes: nginx flushes its log buffer
# every second and Pylon's writer thread writes in batches.
SETTLE = 1.2
CLK_TCK = os.sysconf("SC_CLK_TCK")

HELMET = (
    "Content-Security-Policy",
    "Cross-Origin-Opener-Policy",
    "Cross-Origin-Resource-Policy",
    "Origin-Agent-Cluster",
    "Referrer-Policy",
    # Strict-Transport-Security is helmet's twelfth, sent over TLS only (RFC 6797 §7.2):
    # these runs are plain HTTP, so no contender sends it
    "X-Content-Type-Options",
    "X-DNS-Prefetch-Control",
    "X-Download-Options",
    "X-Frame-Options",
    "X-Permitted-Cross-Domain-Policies",
    "X-XSS-Protection",
)
# what every contender must send on a proxied answer: proof of the same policy work
EXPECTED_HEADERS = HELMET + ("Access-Control-Allow-Origin", "X-Request-Id")
PREFLIGHT_HEADERS = {"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"}


class BenchError(Exception):
    """A failure with a message for the user; no traceback needed."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# /proc


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name (field 3 on), or None when the
    process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def proc_table():
    """{pid: (ppid, pgrp)} for every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (rest := proc_stat(entry.name)) is not None:
            table[int(entry.name)] = (int(rest[1]), int(rest[2]))
    return table


def descendants(root):
    """root and every process below it."""
    table = proc_table()
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            found.append(pid)
            stack.extend(children.get(pid, ()))
    return sorted(found)


def cpu_ticks(pids):
    """utime + stime of the processes, in clock ticks (all threads included)."""
    total = 0
    for pid in pids:
        if (rest := proc_stat(pid)) is not None:
            total += int(rest[11]) + int(rest[12])
    return total


def status_kib(pids, field):
    """The sum of a /proc/PID/status field (VmRSS, VmHWM) over the processes, in KiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def reset_peak_rss(pids):
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    ok = True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            ok = False
    return ok


# ---------------------------------------------------------------------------------------
# processes

SERVICES = []  # everything started, for the cleanup


class Service:
    """A server the harness runs in its own process group: the upstream or a contender."""

    def __init__(self, name, kind, port, cmd, tmp, stop_signal, access_log=None,
                 stdout_to_log=False, env=None, prefix="/api", tls_port=None):
        self.name = name
        self.kind = kind  # one of CONTENDERS, or upstream
        self.port = port
        # where the upstream's paths are on this contender: /api/small is the upstream's
        # /small ("" for the floor, which strips nothing)
        self.prefix = prefix
        self.tls_port = tls_port
        self.cmd = [str(c) for c in cmd]
        self.tmp = tmp
        self.stop_signal = stop_signal
        self.access_log = access_log
        self.stdout_to_log = stdout_to_log
        self.env = env
        self.proc = None
        self.files = []
        self.idle_rss_kib = None

    def start(self, ready_timeout=30):
        for port in (self.port, self.tls_port):
            if port is not None and port_open(port):
                raise BenchError(f"127.0.0.1:{port} is already in use (a leftover from an "
                                 f"earlier run?); {self.name} needs it")
        if self.stdout_to_log:
            out = open(self.access_log, "ab")
        else:
            out = open(self.tmp / f"{self.name}.out", "ab")
        err = open(self.tmp / f"{self.name}.err", "ab")
        self.files = [out, err]
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=err, cwd=self.tmp, env=self.env,
                                     start_new_session=True)
        SERVICES.append(self)
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with status {self.proc.returncode} at "
                                 f"start:\n{self.stderr_tail()}")
            if port_open(self.port) and (self.tls_port is None or port_open(self.tls_port)):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not listen on 127.0.0.1:{self.port} within "
                                 f"{ready_timeout} s:\n{self.stderr_tail()}")
            time.sleep(0.05)
        # nginx forks its workers after binding: wait until they are there
        if self.kind in ("nginx", "upstream"):
            want = 1 + (1 if self.kind == "upstream" else 2)
            while len(self.pids()) < want and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(0.2)
        self.idle_rss_kib = status_kib(self.pids(), "VmRSS")

    def api(self, path):
        """This contender's path for the upstream's `path`."""
        return self.prefix + path

    def stderr_tail(self, lines=15):
        try:
            text = (self.tmp / f"{self.name}.err").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def pids(self):
        if self.proc is None or self.proc.poll() is not None:
            return []
        return descendants(self.proc.pid)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_size(self):
        try:
            return os.path.getsize(self.access_log) if self.access_log else 0
        except OSError:
            return 0

    def truncate_log(self):
        # every writer opened the file with O_APPEND, so it carries on at the new end
        if self.access_log and os.path.exists(self.access_log):
            os.truncate(self.access_log, 0)

    def stop(self):
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=8)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=5)
        # members of its group that outlived the leader (nginx workers); while the group
        # has members its id cannot belong to anyone else
        if any(pgrp == p.pid for _, pgrp in proc_table().values()):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for f in self.files:
            f.close()
        self.files = []
        if self in SERVICES:
            SERVICES.remove(self)


def stop_all():
    for svc in reversed(list(SERVICES)):
        try:
            svc.stop()
        except Exception as e:  # keep stopping the others
            log(f"could not stop {svc.name}: {e}")


def port_open(port):
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def insecure_tls_context(alpn=("http/1.1",)):
    """A client context for the harness's own self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def http_request(port, path, method="GET", headers=None, timeout=5, body=None, tls=False):
    if tls:
        conn = http.client.HTTPSConnection(HOST, port, timeout=timeout,
                                           context=insecure_tls_context())
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def tls_probe(port, offer=("h2", "http/1.1")):
    """(the protocol the TLS listener on port picks from `offer` or None, the TLS version
    and cipher it negotiates with Python's OpenSSL)."""
    with socket.create_connection((HOST, port), timeout=5) as raw:
        with insecure_tls_context(offer).wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.selected_alpn_protocol(), tls.version(), tls.cipher()[0]


# ---------------------------------------------------------------------------------------
# tools and configs


def find_tool(name):
    path = shutil.which(name)
    if path is None:
        # /usr/sbin is not on every user's PATH
        for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
            if os.access(f"{d}/{name}", os.X_OK):
                return f"{d}/{name}"
    return path


def tool_output(cmd, timeout=20):
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({e})"


def fill_template(src, dst, **values):
    text = src.read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", str(value))
    left = sorted(set(re.findall(r"@@[A-Z_]+@@", text)))
    if left:
        raise BenchError(f"{src}: placeholders left unfilled: {', '.join(left)}")
    dst.write_text(text)
    return dst


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key):
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # its escapes are TOML's
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise BenchError(f"cannot write {type(v).__name__} values to TOML")


def dump_toml(doc):
    """TOML for a parsed config: top-level tables and arrays of tables, the rest inline."""
    def is_table_array(v):
        return isinstance(v, list) and v and all(isinstance(x, dict) for x in v)

    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict) and not is_table_array(v)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines += ["", f"[{_toml_key(k)}]"]
            lines += [f"{_toml_key(kk)} = {_toml_value(vv)}" for kk, vv in v.items()]
    for k, v in doc.items():
        if is_table_array(v):
            for item in v:
                lines += ["", f"[[{_toml_key(k)}]]"]
                lines += [f"{_toml_key(kk)} = {_toml_value(vv)}" for kk, vv in item.items()]
    return "\n".join(lines) + "\n"


def pylon_config(tmp, name, port, extra_routes=0, auth=None, routes=(), tls=None,
                 cache=None):
    """benches/pylon.toml with this run's port and temp paths, checked; and extra routes
    (prefixes /svcN), authenticators, routes, a [tls] and a [cache] section if given."""
    with open(BENCHES / "pylon.toml", "rb") as f:
        doc = tomllib.load(f)
    server = doc.setdefault("server", {})
    server["listen"] = [f"{HOST}:{port}"]
    server["pid_file"] = str(tmp / f"{name}.pid")
    server["upgrade_sock"] = str(tmp / f"{name}-upgrade.sock")
    doc.setdefault("access_log", {})["path"] = str(tmp / f"{name}-access.log")
    if tls:
        doc["tls"] = tls
    if auth:
        doc["auth"] = auth
    if cache:
        doc["cache"] = cache
    doc_routes = doc.setdefault("routes", [])
    doc_routes.extend(routes)
    for i in range(extra_routes):
        doc_routes.append({"prefix": f"/svc{i}",
                           "upstreams": [f"http://{HOST}:{UPSTREAM_PORT}"]})
    path = tmp / f"{name}.toml"
    path.write_text(dump_toml(doc))
    check = subprocess.run([str(PYLON), "-t", "-c", str(path)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        raise BenchError(f"pylon rejects {path}:\n{check.stdout}{check.stderr}")
    return path, tmp / f"{name}-access.log"


def nginx_command(nginx, tmp, name, conf):
    cmd = [nginx, "-p", str(tmp), "-c", str(conf)]
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", tool_output([nginx, "-v"]))
    if m and tuple(map(int, m.groups())) >= (1, 19, 5):
        cmd[1:1] = ["-e", str(tmp / f"{name}-error.log")]
    return cmd


def check_config(cmd, what):
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=60)
    if p.returncode != 0:
        raise BenchError(f"{what} config check failed ({' '.join(cmd)}):\n{p.stdout}{p.stderr}")


def nginx_has_realip(nginx):
    return "http_realip_module" in tool_output([nginx, "-V"])


def upstream_status():
    """(connections accepted, requests handled) by the upstream so far (stub_status), or
    None; the status request itself is counted in both."""
    try:
        status, _, body = http_request(UPSTREAM_PORT, "/_upstream_status")
    except OSError:
        return None
    m = re.search(rb"^\s*(\d+)\s+\d+\s+(\d+)\s*$", body, re.M)
    return (int(m.group(1)), int(m.group(2))) if status == 200 and m else None


def upstream_accepts():
    """Connections the upstream has accepted so far (stub_status), or None."""
    st = upstream_status()
    return st[0] if st else None


# ---------------------------------------------------------------------------------------
# starting the servers


def start_upstream(tools, tmp):
    www = tmp / "www"
    www.mkdir()
    for name, size in BODY_SIZES.items():
        pattern = b"0123456789abcdef" * 64
        data = (pattern * (size // len(pattern) + 1))[:size]
        (www / name).write_bytes(data)
        os.chmod(www / name, 0o644)
    # the upload location's answer comes from a POST to this file (upstream.conf)
    (www / "upload").write_bytes(b"")
    os.chmod(www / "upload", 0o644)
    os.chmod(www, 0o755)
    (tmp / "upstream-tmp").mkdir()
    status = ""
    if tools["nginx_stub_status"]:
        status = "        location = /_upstream_status {\n            stub_status;\n        }"
    conf = fill_template(PEERS / "upstream.conf", tmp / "upstream.conf", TMP=tmp, WWW=www,
                         PORT=UPSTREAM_PORT, STATUS=status)
    cmd = nginx_command(tools["nginx"], tmp, "upstream", conf)
    check_config(cmd + ["-t", "-q"], "upstream nginx")
    svc = Service("upstream", "upstream", UPSTREAM_PORT, cmd, tmp, signal.SIGTERM)
    svc.start()
    for path, body in (("/small", SMALL_BODY), ("/", SMALL_BODY)):
        status, _, got = http_request(UPSTREAM_PORT, path)
        if status != 200 or got != body:
            raise BenchError(f"the upstream answers {path} with {status} {got[:40]!r}")
    for name, size in BODY_SIZES.items():
        status, _, got = http_request(UPSTREAM_PORT, f"/{name}")
        if status != 200 or len(got) != size:
            raise BenchError(f"the upstream answers /{name} with {status}, {len(got)} bytes")
    return svc


def start_pylon(tmp, name, port, extra_routes=0, tls_port=None, **config):
    conf, access_log = pylon_config(tmp, name, port, extra_routes, **config)
    env = dict(os.environ, RUST_LOG="warn")
    svc = Service(name, "pylon", port, [PYLON, "-c", conf], tmp, signal.SIGINT,
                  access_log=access_log, env=env, tls_port=tls_port)
    svc.start(ready_timeout=60)
    return svc


def start_nginx(tools, tmp, name, port, extra_routes=0, extra="", tls_port=None,
                http_extra=""):
    """benches/peers/nginx.conf; `extra` goes into its server block, `http_extra` into
    its http block."""
    extra += "".join(f"        location /svc{i}/ {{\n            proxy_pass http://backend/;\n"
                     f"        }}\n" for i in range(extra_routes))
    realip = ""
    if tools["nginx_realip"]:
        realip = ("set_real_ip_from 127.0.0.0/8;\n    real_ip_header X-Forwarded-For;\n"
                  "    real_ip_recursive on;")
    (tmp / f"{name}-tmp").mkdir(exist_ok=True)
    conf = fill_template(PEERS / "nginx.conf", tmp / f"{name}.conf", TMP=tmp, NAME=name,
                         PORT=port, UPSTREAM_PORT=UPSTREAM_PORT, REALIP=realip,
                         EXTRA_LOCATIONS=extra, HTTP_EXTRA=http_extra)
    cmd = nginx_command(tools["nginx"], tmp, name, conf)
    check_config(cmd + ["-t", "-q"], "nginx")
    svc = Service(name, "nginx", port, cmd, tmp, signal.SIGTERM,
                  access_log=tmp / f"{name}-access.log", tls_port=tls_port)
    svc.start()
    return svc


def start_haproxy(tools, tmp, name, port):
    conf = fill_template(PEERS / "haproxy.cfg", tmp / f"{name}.cfg", PORT=port,
                         UPSTREAM_PORT=UPSTREAM_PORT)
    check_config([tools["haproxy"], "-c", "-q", "-f", str(conf)], "HAProxy")
    # -db: foreground, no master process; its log lines go to stdout, that is to the file
    svc = Service(name, "haproxy", port, [tools["haproxy"], "-db", "-f", conf], tmp,
                  signal.SIGTERM, access_log=tmp / f"{name}-access.log", stdout_to_log=True)
    svc.start()
    return svc


def pylon_threads():
    """server.threads of benches/pylon.toml: the floor runs with as many."""
    with open(BENCHES / "pylon.toml", "rb") as f:
        return int(tomllib.load(f).get("server", {}).get("threads") or os.cpu_count())


def start_floor(tmp, name, port, tls_port=None, cert=None, key=None):
    cmd = [FLOOR, "--listen", f"{HOST}:{port}", "--upstream", f"{HOST}:{UPSTREAM_PORT}",
           "--threads", pylon_threads()]
    if tls_port:
        cmd += ["--tls-listen", f"{HOST}:{tls_port}", "--cert", cert, "--key", key]
    env = dict(os.environ, RUST_LOG="warn")
    svc = Service(name, "floor", port, cmd, tmp, signal.SIGINT, env=env, prefix="",
                  tls_port=tls_port)
    svc.start(ready_timeout=60)
    return svc


def start_caddy(tools, tmp, name, port):
    conf = fill_template(PEERS / "Caddyfile", tmp / f"{name}.Caddyfile", TMP=tmp, NAME=name,
                         PORT=port, UPSTREAM_PORT=UPSTREAM_PORT)
    # Caddy keeps its state (autosave.json, certificates) under XDG_CONFIG_HOME and
    # XDG_DATA_HOME: here, in the temp dir
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp / f"{name}-config"),
               XDG_DATA_HOME=str(tmp / f"{name}-data"))
    cmd = [tools["caddy"], "run", "--config", conf, "--adapter", "caddyfile"]
    p = subprocess.run([tools["caddy"], "validate", "--config", str(conf), "--adapter",
                        "caddyfile"], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60, env=env)
    if p.returncode != 0:
        raise BenchError(f"Caddy config check failed:\n{p.stdout}{p.stderr}")
    svc = Service(name, "caddy", port, cmd, tmp, signal.SIGTERM,
                  access_log=tmp / f"{name}-access.log", env=env)
    svc.start()
    return svc


def start_tutorial(tools, tmp, name, port):
    if not (TUTORIAL / "node_modules" / "http-proxy-middleware").is_dir():
        raise BenchError(f"{TUTORIAL}/node_modules is missing: run `npm ci --prefix "
                         f"{TUTORIAL}` (make bench-deps does)")
    env = dict(os.environ, HOST=HOST, PORT=str(port), NODE_ENV="production",
               UPSTREAM=f"http://{HOST}:{UPSTREAM_PORT}",
               ACCESS_LOG=str(tmp / f"{name}-access.log"))
    svc = Service(name, "tutorial", port, [tools["node"], TUTORIAL / "server.js"], tmp,
                  signal.SIGTERM, access_log=tmp / f"{name}-access.log", env=env)
    svc.start()
    return svc


def start_contender(kind, tools, tmp):
    port = PORTS[kind]
    if kind == "pylon":
        return start_pylon(tmp, kind, port)
    if kind == "nginx":
        return start_nginx(tools, tmp, kind, port)
    if kind == "haproxy":
        return start_haproxy(tools, tmp, kind, port)
    if kind == "floor":
        return start_floor(tmp, kind, port)
    if kind == "caddy":
        return start_caddy(tools, tmp, kind, port)
    return start_tutorial(tools, tmp, kind, port)


def check_proxied(svc):
    """The contender proxies /api/small, stripped, to the upstream (which counts it), and
    does the policy work: the headers on the answer, a request id and X-Forwarded-* on
    the request the upstream got. The floor only proxies."""
    path = svc.api("/small")
    before = upstream_status()
    status, headers, body = http_request(svc.port, path)
    after = upstream_status()
    if status != 200 or body != SMALL_BODY:
        raise BenchError(f"{svc.name} answers {path} with {status} {body[:60]!r}, "
                         f"expected 200 {SMALL_BODY!r}")
    # two requests between the readings: the proxied one and the second status request
    if before and after and after[1] - before[1] < 2:
        raise BenchError(f"{svc.name} answered {path} without asking the upstream")
    if svc.kind in BARE:
        return
    missing = [h for h in EXPECTED_HEADERS if headers.get(h) is None]
    if missing:
        raise BenchError(f"{svc.name} does not send {', '.join(missing)}")
    if headers.get("X-Powered-By") is not None:
        raise BenchError(f"{svc.name} passes X-Powered-By on")
    status, headers, _ = http_request(svc.port, svc.api("/echo"))
    seen = ("X-Seen-Request-Id", "X-Seen-Forwarded-For", "X-Seen-Forwarded-Proto",
            "X-Seen-Forwarded-Host")
    missing = [h[len("X-Seen-"):] for h in seen if not headers.get(h)]
    if status != 200 or missing:
        raise BenchError(f"{svc.name} does not send {', '.join(missing) or 'anything'} "
                         f"upstream ({svc.api('/echo')} answered {status})")


def check_access_logs(services):
    """Every contender that keeps one wrote a line for the check requests."""
    time.sleep(SETTLE + 0.3)
    for svc in services:
        if svc.kind in BARE:
            continue
        if svc.log_size() == 0:
            raise BenchError(f"{svc.name} wrote nothing to its access log {svc.access_log}")
        svc.truncate_log()


# ---------------------------------------------------------------------------------------
# wrk

_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def _to_us(value, unit):
    return float(value) * _UNITS_US[unit]


def parse_wrk(text):
    res = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise BenchError(f"cannot read wrk's output:\n{text}")
    res["requests"] = int(m.group(1))
    res["elapsed_s"] = _to_us(m.group(2), m.group(3)) / 1e6
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    res["rps"] = float(m.group(1)) if m else res["requests"] / max(res["elapsed_s"], 1e-9)
    pct = {}
    block = text.split("Latency Distribution", 1)
    if len(block) == 2:
        for p, v, u in re.findall(r"^\s*(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", block[1], re.M):
            pct[int(p)] = _to_us(v, u)
    res["p50_us"] = pct.get(50)
    res["p75_us"] = pct.get(75)
    res["p90_us"] = pct.get(90)
    res["p99_us"] = pct.get(99)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                    map(int, m.groups()))) if m else {}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    res["non_2xx"] = int(m.group(1)) if m else 0
    res["errors"] = res["non_2xx"] + sum(res["socket_errors"].values())
    return res


def wrk_command(port, path, conns, duration, script=None, script_args=(), headers=(),
                scheme="http"):
    cmd = ["wrk", f"-t{min(WRK_THREADS, conns)}", f"-c{conns}", f"-d{duration}s", "--latency",
           "--timeout", WRK_TIMEOUT]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", str(BENCHES / script)]
    cmd.append(f"{scheme}://{HOST}:{port}{path}")
    if script_args:
        cmd += ["--", *map(str, script_args)]
    return cmd


def run_wrk(port, path, conns, duration, script=None, script_args=(), headers=(),
            scheme="http"):
    cmd = wrk_command(port, path, conns, duration, script, script_args, headers, scheme)
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=duration + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration + 60} s: {' '.join(cmd)}")
    if p.returncode != 0:
        raise BenchError(f"wrk failed ({' '.join(cmd)}):\n{p.stdout}{p.stderr}")
    res = parse_wrk(p.stdout)
    res["wrk"] = " ".join(cmd)
    return res


def percentile(sorted_values, pct):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))]


def parse_h2load(text, log_path):
    """h2load's summary; the latency percentiles from its --log-file (one line a request:
    start time, status, microseconds)."""
    m = re.search(r"finished in ([\d.]+)(us|ms|s|m|h), ([\d.]+) req/s", text)
    c = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not (m and c and codes):
        raise BenchError(f"cannot read h2load's output:\n{text}")
    res = {"elapsed_s": _to_us(m.group(1), m.group(2)) / 1e6}
    _total, _started, done, succeeded, _failed, errored, timeout = map(int, c.groups())
    res["requests"] = succeeded
    res["rps"] = succeeded / max(res["elapsed_s"], 1e-9)
    res["non_2xx"] = int(codes.group(3)) + int(codes.group(4))
    # requests h2load gave up on: a broken connection (errored) or a timeout
    res["socket_errors"] = {"errored": errored, "timeout": timeout}
    res["errors"] = res["non_2xx"] + errored + timeout
    lat = []
    try:
        with open(log_path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[1].startswith("2"):
                    lat.append(int(parts[2]))
    except OSError:
        pass
    lat.sort()
    for pct in (50, 75, 90, 99):
        res[f"p{pct}_us"] = percentile(lat, pct)
    res["done"] = done
    return res


def run_h2load(port, path, conns, streams, duration, headers=(), h1=False):
    """h2load over TLS for `duration` seconds: HTTP/2 with `streams` streams per connection,
    or HTTP/1.1 (h1) one request at a time."""
    log_path = Path(tempfile.gettempdir()) / f"pylon-bench-h2load-{os.getpid()}.log"
    cmd = ["h2load", "-t", str(min(WRK_THREADS, conns)), "-c", str(conns), "-D",
           str(duration), "--log-file", str(log_path)]
    cmd += ["--h1"] if h1 else ["-m", str(streams)]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(f"https://{HOST}:{port}{path}")
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=duration + 60)
        if p.returncode != 0:
            raise BenchError(f"h2load failed ({' '.join(cmd)}):\n{p.stdout[-3000:]}{p.stderr}")
        res = parse_h2load(p.stdout, log_path)
    except subprocess.TimeoutExpired:
        raise BenchError(f"h2load did not finish within {duration + 60} s: {' '.join(cmd)}")
    finally:
        try:
            log_path.unlink()
        except OSError:
            pass
    m = re.search(r"^Application protocol: (\S+)", p.stdout, re.M)
    want = "http/1.1" if h1 else "h2"
    if not m or m.group(1) != want:
        raise BenchError(f"h2load spoke {m.group(1) if m else 'nothing'}, not {want}: "
                         f"{' '.join(cmd)}")
    m = re.search(r"^TLS Protocol: (\S+)", p.stdout, re.M)
    res["tls_protocol"] = m.group(1) if m else None
    res["h2load"] = " ".join(cmd)
    return res


def measure(svc, upstream, run):
    """One load run against svc (`run()` returns the load generator's figures), with the
    contender's CPU time and peak memory."""
    pids = svc.pids()
    if not pids:
        raise BenchError(f"{svc.name} is not running any more:\n{svc.stderr_tail()}")
    peak_reset = reset_peak_rss(pids)
    up_pids = upstream.pids()
    status0 = upstream_status()
    ticks0, up0 = cpu_ticks(pids), cpu_ticks(up_pids)
    res = run()
    time.sleep(SETTLE)
    after = svc.pids()
    ticks1, up1 = cpu_ticks(after), cpu_ticks(up_pids)
    status1 = upstream_status()
    # the first status request's own connection and request are counted in the second
    # reading
    both = status0 is not None and status1 is not None
    res["upstream_connections"] = status1[0] - status0[0] - 1 if both else None
    res["upstream_requests"] = status1[1] - status0[1] - 1 if both else None
    n = res["requests"]
    res["cpu_us_per_req"] = (ticks1 - ticks0) * 1e6 / CLK_TCK / n if n else None
    res["upstream_cpu_us_per_req"] = (up1 - up0) * 1e6 / CLK_TCK / n if n else None
    res["peak_rss_kib"] = status_kib(after, "VmHWM")
    res["peak_rss_since"] = "run" if peak_reset else "process start"
    res["rss_after_kib"] = status_kib(after, "VmRSS")
    res["processes"] = len(after)
    if set(after) != set(pids):
        res["note"] = "the contender's processes changed during the run"
    size = svc.log_size()
    res["access_log_bytes_per_req"] = size / n if n else None
    svc.truncate_log()
    return res


# ---------------------------------------------------------------------------------------
# the runs


def run_main(contenders, upstream, levels, rounds, duration):
    runs = []
    total = len(levels) * rounds * len(contenders)
    done = 0
    for rnd in range(1, rounds + 1):
        for conns in levels:
            for svc in contenders:
                done += 1
                res = measure(svc, upstream,
                              lambda: run_wrk(svc.port, svc.api("/small"), conns, duration))
                res.update(contender=svc.name, connections=conns, round=rnd)
                runs.append(res)
                log(f"[{done}/{total}] {svc.name:8} c={conns:<5} round {rnd}: "
                    f"{res['rps']:>10,.0f} req/s  p99 {fmt_us(res['p99_us'])}  "
                    f"cpu {fmt_num(res['cpu_us_per_req'], 1)} us/req  errors {res['errors']}")
    return runs


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs, keys):
    """Median per group of runs (grouped by keys); errors summed over the rounds."""
    groups = {}
    for r in runs:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, rs in groups.items():
        row = dict(zip(keys, key))
        for field in ("rps", "p50_us", "p99_us", "cpu_us_per_req", "upstream_cpu_us_per_req",
                      "upstream_connections", "peak_rss_kib", "access_log_bytes_per_req"):
            row[field] = median([r.get(field) for r in rs])
        row["errors"] = sum(r["errors"] for r in rs)
        row["non_2xx"] = sum(r["non_2xx"] for r in rs)
        row["socket_errors"] = sum(sum(r["socket_errors"].values()) for r in rs)
        ups = [r.get("upstream_requests") for r in rs]
        row["upstream_requests"] = None if None in ups else sum(ups)
        row["requests"] = sum(r["requests"] for r in rs)
        row["rounds"] = len(rs)
        out.append(row)
    return out


def exhaust_limited(port):
    """Use up the one request per hour that /limited allows, so the run sees only 429s."""
    for _ in range(3):
        status, _, _ = http_request(port, "/limited/x")
        if status == 429:
            return
    raise BenchError(f"127.0.0.1:{port}/limited/x never answers 429")


# ---------------------------------------------------------------------------------------
# the scenarios


def make_certificate(tmp):
    """A self-signed ECDSA P-256 certificate for localhost, for every TLS listener."""
    cert, key = tmp / "tls-cert.pem", tmp / "tls-key.pem"
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise BenchError(f"openssl could not make a certificate:\n{p.stderr}")
    return cert, key


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_ecdsa_to_raw(der, size=32):
    """An ECDSA signature as OpenSSL writes it (DER: SEQUENCE of INTEGER r, s) in JWS's
    form, r and s as `size`-byte big-endian numbers one after the other."""
    if der[0] != 0x30:
        raise BenchError("openssl wrote an ECDSA signature that is not a DER sequence")
    i = 3 if der[1] & 0x80 else 2
    out = b""
    for _ in range(2):
        if der[i] != 0x02:
            raise BenchError("openssl wrote an ECDSA signature without its two integers")
        n = der[i + 1]
        out += int.from_bytes(der[i + 2:i + 2 + n], "big").to_bytes(size, "big")
        i += 2 + n
    return out


def make_jwt(tmp, alg):
    """A key pair made with openssl and a token signed with it, valid for a day:
    (public key file, token)."""
    key, pub = tmp / f"jwt-{alg}.key", tmp / f"jwt-{alg}.pub"
    gen = (["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"] if alg == "RS256" else
           ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
    for cmd in (["openssl", "genpkey", *gen, "-out", str(key)],
                ["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)]):
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        if p.returncode != 0:
            raise BenchError(f"{' '.join(cmd)} failed:\n{p.stderr.decode(errors='replace')}")
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": "bench", "exp": int(time.time()) + 86400}).encode())
    signing_input = f"{head}.{body}".encode()
    p = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key), "-binary"],
                       input=signing_input, capture_output=True, timeout=30)
    if p.returncode != 0:
        raise BenchError(f"openssl could not sign the {alg} token:\n{p.stderr.decode()}")
    sig = p.stdout if alg == "RS256" else der_ecdsa_to_raw(p.stdout)
    return pub, f"{head}.{body}.{b64url(sig)}"


def nginx_tls_server(nginx, tls_port, cert, key):
    """Lines for nginx.conf's server block: a TLS listener with HTTP/2 (1.25.1 moved http2
    from the listen directive to its own), TLS 1.2 and 1.3 as Pylon offers."""
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", tool_output([nginx, "-v"]))
    version = tuple(map(int, m.groups())) if m else (0, 0, 0)
    if version >= (1, 25, 1):
        listen = f"listen {HOST}:{tls_port} ssl backlog=4096;\n        http2 on;"
    else:
        listen = f"listen {HOST}:{tls_port} ssl http2 backlog=4096;"
    return (f"        {listen}\n"
            f"        ssl_certificate {cert};\n"
            f"        ssl_certificate_key {key};\n"
            f"        ssl_protocols TLSv1.2 TLSv1.3;\n")


class Scenarios:
    """What the scenarios share: the main contenders, and the extra instances (10,000
    routes, auth routes, TLS listeners) started when a scenario first needs them."""

    def __init__(self, main, tools, tmp, duration):
        self.main = main  # {kind: Service} of the main contenders
        self.tools = tools
        self.tmp = tmp
        self.warm_s = min(2, duration)
        self.extras = {}
        self._cert = None
        self._auth = None

    def get(self, kind):
        return self.main.get(kind)

    def extra(self, name, start):
        """The extra instance `name`, started (and warmed up) on first use."""
        if name not in self.extras:
            svc = start()
            check_proxied(svc)
            run_wrk(svc.port, svc.api("/small"), 100, self.warm_s)
            time.sleep(0.5)
            svc.truncate_log()
            self.extras[name] = svc
        return self.extras[name]

    def stop_extras(self):
        for svc in self.extras.values():
            svc.stop()
        self.extras = {}

    def certificate(self):
        if self._cert is None:
            self._cert = make_certificate(self.tmp)
        return self._cert

    def credentials(self):
        if self._auth is None:
            rs_pub, rs_token = make_jwt(self.tmp, "RS256")
            es_pub, es_token = make_jwt(self.tmp, "ES256")
            self._auth = {"rs_pub": rs_pub, "rs_token": rs_token, "es_pub": es_pub,
                          "es_token": es_token}
        return self._auth

    def tls(self, kind):
        """kind's instance with a TLS listener (HTTP/2 offered by ALPN where it can)."""
        if self.get(kind) is None:
            return None
        plain, tls_port = TLS_PORTS[kind]
        cert, key = self.certificate()
        name = f"{kind}-tls"
        if kind == "pylon":
            tls = {"listen": [f"{HOST}:{tls_port}"], "h2": True,
                   "certificates": [{"cert": str(cert), "key": str(key)}]}
            return self.extra(name, lambda: start_pylon(self.tmp, name, plain,
                                                        tls_port=tls_port, tls=tls))
        if kind == "nginx":
            extra = nginx_tls_server(self.tools["nginx"], tls_port, cert, key)
            return self.extra(name, lambda: start_nginx(self.tools, self.tmp, name, plain,
                                                        extra=extra, tls_port=tls_port))
        return self.extra(name, lambda: start_floor(self.tmp, name, plain, tls_port, cert,
                                                    key))


def variant(svc, label, path, script=None, args=(), expect=(200, None), method="GET",
            headers=None, prep=None, load_headers=None, body=None, tool="wrk", tls=False,
            denied=None, hits=False):
    """One row of a scenario. headers go with the check request only (a wrk script sends
    its own); load_headers with the check and every request of the run; denied: the
    status of the check request without load_headers (an auth route's 401); hits: every
    answer of the run should come from the gateway's cache, so the upstream should see
    none of its requests."""
    return dict(svc=svc, label=label, path=path, script=script, args=args, expect=expect,
                method=method, headers=headers or {}, prep=prep,
                load_headers=load_headers or {}, body=body, tool=tool, tls=tls,
                denied=denied, hits=hits)


def scenario_routes(sc):
    variants = []
    pylon, nginx = sc.get("pylon"), sc.get("nginx")
    n = EXTRA_ROUTES + 2
    if pylon:
        scaled = sc.extra("pylon-routes", lambda: start_pylon(
            sc.tmp, "pylon-routes", SCALED_PORTS["pylon"], EXTRA_ROUTES))
        variants += [variant(pylon, "2 routes", "/api/small", expect=(200, len(SMALL_BODY))),
                     variant(scaled, f"{n:,} routes", "/api/small",
                             expect=(200, len(SMALL_BODY)))]
    if nginx:
        scaled = sc.extra("nginx-routes", lambda: start_nginx(
            sc.tools, sc.tmp, "nginx-routes", SCALED_PORTS["nginx"], EXTRA_ROUTES))
        variants += [variant(nginx, "2 locations", "/api/small",
                             expect=(200, len(SMALL_BODY))),
                     variant(scaled, f"{n:,} locations", "/api/small",
                             expect=(200, len(SMALL_BODY)))]
    return f"Routes: 2 vs {n:,} (GET /api/small)", None, variants


def scenario_clients(sc):
    variants = []
    small = len(SMALL_BODY)
    for svc in (sc.get("pylon"), sc.get("nginx") if sc.tools["nginx_realip"] else None):
        if svc:
            variants += [
                variant(svc, "1 client", "/api/small", "xff.lua", (1,), (200, small),
                        headers={"X-Forwarded-For": "10.0.0.1"}),
                variant(svc, f"{XFF_CLIENTS:,} clients", "/api/small", "xff.lua",
                        (XFF_CLIENTS,), (200, small), headers={"X-Forwarded-For": "10.0.0.2"}),
            ]
    return (f"Clients: 1 vs {XFF_CLIENTS:,} addresses in a trusted X-Forwarded-For "
            "(xff.lua, GET /api/small)", None, variants)


def scenario_bodies(sc):
    variants = []
    for kind in ("pylon", "floor", "nginx"):
        svc = sc.get(kind)
        if svc:
            variants += [variant(svc, label, svc.api(f"/{name}"),
                                 expect=(200, BODY_SIZES[name]))
                         for name, label in (("empty", "empty"), ("1k", "1 KiB"),
                                             ("64k", "64 KiB"), ("1m", "1 MiB"))]
    return ("Response bodies: empty vs 1 KiB vs 64 KiB vs 1 MiB (GET /api/NAME; the floor "
            "/NAME)", None, variants)


def scenario_gateway_answers(sc):
    variants = []
    for svc in (sc.get("pylon"), sc.get("nginx")):
        if svc:
            variants += [
                variant(svc, "proxied GET /api/small", "/api/small",
                        expect=(200, len(SMALL_BODY))),
                variant(svc, "404 GET /nope", "/nope", expect=(404, None)),
                variant(svc, "429 GET /limited/x", "/limited/x", expect=(429, None),
                        prep=exhaust_limited),
                variant(svc, "204 CORS preflight", "/api/small", "preflight.lua",
                        expect=(204, 0), method="OPTIONS", headers=PREFLIGHT_HEADERS),
            ]
    return "Answers the gateway makes itself vs a proxied request", None, variants


def scenario_auth(sc):
    small = (200, len(SMALL_BODY))
    key_hash = "sha256:" + hashlib.sha256(API_KEY.encode()).hexdigest()
    variants = []
    if sc.get("pylon"):
        cred = sc.credentials()
        up = [f"http://{HOST}:{UPSTREAM_PORT}"]
        auth = {
            "rs": {"type": "jwt", "algorithms": ["RS256"],
                   "public_key_file": str(cred["rs_pub"])},
            "es": {"type": "jwt", "algorithms": ["ES256"],
                   "public_key_file": str(cred["es_pub"])},
            "key": {"type": "api_key", "header": "X-Api-Key", "keys": {"bench": key_hash}},
        }
        routes = [{"prefix": f"/{name}", "upstreams": up, "auth": name}
                  for name in ("rs", "es", "key")]
        svc = sc.extra("pylon-auth", lambda: start_pylon(
            sc.tmp, "pylon-auth", AUTH_PORTS["pylon"], auth=auth, routes=routes))
        variants += [
            variant(svc, "open route", "/api/small", expect=small),
            variant(svc, "JWT RS256", "/rs/small", expect=small, denied=401,
                    load_headers={"Authorization": f"Bearer {cred['rs_token']}"}),
            variant(svc, "JWT ES256", "/es/small", expect=small, denied=401,
                    load_headers={"Authorization": f"Bearer {cred['es_token']}"}),
            variant(svc, "API key", "/key/small", expect=small, denied=401,
                    load_headers={"X-Api-Key": API_KEY}),
        ]
    if sc.get("nginx"):
        # open-source nginx has no JWT; an API key is a comparison of one header
        extra = ("        location /key/ {\n"
                 f"            if ($http_x_api_key != \"{API_KEY}\") {{\n"
                 "                return 401;\n"
                 "            }\n"
                 "            proxy_pass http://backend/;\n"
                 "        }\n")
        svc = sc.extra("nginx-auth", lambda: start_nginx(
            sc.tools, sc.tmp, "nginx-auth", AUTH_PORTS["nginx"], extra=extra))
        variants += [
            variant(svc, "open route", "/api/small", expect=small),
            variant(svc, "API key", "/key/small", expect=small, denied=401,
                    load_headers={"X-Api-Key": API_KEY}),
        ]
    return ("Authentication: an open route vs JWT RS256, JWT ES256 and API-key routes, the "
            "same valid credential on every request",
            "nginx (open source) has no JWT; its API key is a header compared in the config.",
            variants)


def scenario_upload(sc):
    variants = []
    for kind in ("pylon", "floor", "nginx"):
        svc = sc.get(kind)
        if svc:
            variants.append(variant(svc, "1 MiB POST", svc.api("/upload"), "upload.lua",
                                    expect=(200, 3), method="POST", body=UPLOAD_BODY))
    return ("Upload: POST of a 1 MiB body (upload.lua; the upstream reads and drops it)",
            "nginx streams the body upstream (proxy_request_buffering off, as Pylon does) "
            "instead of spooling it to a temp file first.", variants)


def scenario_h2(sc):
    variants = []
    for kind in ("pylon", "floor", "nginx"):
        svc = sc.tls(kind)
        if svc:
            variants += [
                variant(svc, "HTTPS/1.1 keep-alive", svc.api("/small"), tls=True,
                        expect=(200, len(SMALL_BODY))),
                variant(svc, f"HTTP/2, {H2_STREAMS} streams a connection",
                        svc.api("/small"), tool="h2load", tls=True,
                        expect=(200, len(SMALL_BODY))),
            ]
    return ("HTTPS: HTTP/1.1 keep-alive (wrk) vs HTTP/2 (h2load), GET /api/small",
            f"ECDSA P-256 certificate; HTTP/2: h2load -c {H2_CONNECTIONS} -m {H2_STREAMS}, "
            f"{H2_CONNECTIONS * H2_STREAMS} requests in flight like the "
            f"{SCALING_CONNECTIONS} connections of HTTP/1.1; its percentiles from its "
            "--log-file.", variants)


def scenario_tls_connect(sc):
    variants = []
    for kind in ("pylon", "floor", "nginx"):
        svc = sc.tls(kind)
        if svc:
            variants.append(variant(svc, "new TLS connection per request",
                                    svc.api("/small"), tls=True,
                                    expect=(200, len(SMALL_BODY)),
                                    load_headers={"Connection": "close"}))
    return ("New TLS connections: one request on each, then close (wrk, Connection: close)",
            "Every connection is a full handshake (ECDSA P-256 certificate): wrk never "
            "resumes a session. req/s is connections per second; wrk's latency leaves the "
            "handshake out.", variants)


def warm_cache(svc, path, header, is_hit, notes):
    """A prep for a cache-hit variant: fills the cache with `path` and checks that the
    next answer is a hit (`is_hit` of the `header` field's value), with the body and the
    policy headers of a proxied answer; a hit without them goes into `notes`."""
    def prep(port):
        seen = []
        for _ in range(3):
            status, headers, body = http_request(port, path)
            value = headers.get(header)
            seen.append(f"{status} {header}: {value}")
            if status == 200 and body == SMALL_BODY and value and is_hit(value):
                missing = [h for h in EXPECTED_HEADERS if headers.get(h) is None]
                if missing:
                    note = (f"{svc.kind}'s cache hits lack {', '.join(missing)}, which its "
                            "proxied answers carry")
                    if note not in notes:
                        notes.append(note)
                        log(f"[cache] {note}")
                return
        raise BenchError(f"{svc.name}: GET {path} is not answered from the cache after a "
                         f"fill (answers: {'; '.join(seen)})")
    return prep


def scenario_cache(sc):
    small = (200, len(SMALL_BODY))
    cached = f"{CACHE_PREFIX}/small"
    variants = []
    notes = []

    def warmed(svc, prep):
        # filled, checked, then a short unmeasured run of hits, as sc.extra runs proxied
        # requests
        if svc.name not in warmed_up:
            prep(svc.port)
            run_wrk(svc.port, cached, SCALING_CONNECTIONS, sc.warm_s)
            time.sleep(0.5)
            svc.truncate_log()
            warmed_up.add(svc.name)
        return prep

    warmed_up = set()
    if sc.get("pylon"):
        route = {"prefix": CACHE_PREFIX, "upstreams": [f"http://{HOST}:{UPSTREAM_PORT}"],
                 "cache": {"ttl": f"{CACHE_TTL_S}s"}}
        svc = sc.extra("pylon-cache", lambda: start_pylon(
            sc.tmp, "pylon-cache", CACHE_PORTS["pylon"], routes=[route],
            cache={"memory": CACHE_MEMORY}))
        variants += [
            variant(svc, "proxied GET /api/small", "/api/small", expect=small),
            variant(svc, f"cache hit GET {cached}", cached, expect=small, hits=True,
                    prep=warmed(svc, warm_cache(svc, cached, "Cache-Status",
                                                lambda v: v.startswith("pylon; hit"),
                                                notes))),
        ]
    if sc.get("nginx"):
        # the cache in files under the temp dir (the page cache keeps them in memory);
        # X-Cache-Status at the server level, as an add_header in the location would
        # drop the server's security headers there
        http_extra = (f"    proxy_cache_path {sc.tmp}/nginx-cache-store levels=1:2 "
                      f"keys_zone=bench:16m max_size={CACHE_MEMORY} inactive=2h "
                      "use_temp_path=off;\n")
        extra = ("        add_header X-Cache-Status $upstream_cache_status always;\n"
                 f"        location {CACHE_PREFIX}/ {{\n"
                 "            proxy_cache bench;\n"
                 f"            proxy_cache_valid 200 {CACHE_TTL_S}s;\n"
                 "            proxy_cache_lock on;\n"
                 "            proxy_pass http://backend/;\n"
                 "        }\n")
        svc = sc.extra("nginx-cache", lambda: start_nginx(
            sc.tools, sc.tmp, "nginx-cache", CACHE_PORTS["nginx"], extra=extra,
            http_extra=http_extra))
        variants += [
            variant(svc, "proxied GET /api/small", "/api/small", expect=small),
            variant(svc, f"cache hit GET {cached}", cached, expect=small, hits=True,
                    prep=warmed(svc, warm_cache(svc, cached, "X-Cache-Status",
                                                lambda v: v == "HIT", notes))),
        ]
    return ("Response cache: a proxied GET vs a cache hit of the same answer (13 bytes)",
            f"Pylon: [cache] memory = \"{CACHE_MEMORY}\", the route {CACHE_PREFIX} with "
            f"cache = {{ ttl = \"{CACHE_TTL_S}s\" }}; nginx: proxy_cache (files in the temp "
            f"dir, keys_zone 16m, max_size {CACHE_MEMORY}), proxy_cache_valid 200 "
            f"{CACHE_TTL_S}s, proxy_cache_lock on. Before each hit run the cache is filled "
            "and an answer checked for a hit (Cache-Status: pylon; hit / X-Cache-Status: "
            "HIT).", variants, notes)


SCENARIO_BUILDERS = {
    "routes": scenario_routes,
    "clients": scenario_clients,
    "bodies": scenario_bodies,
    "gateway_answers": scenario_gateway_answers,
    "auth": scenario_auth,
    "upload": scenario_upload,
    "h2": scenario_h2,
    "tls_connect": scenario_tls_connect,
    "cache": scenario_cache,
}
SCENARIOS = tuple(SCENARIO_BUILDERS)
# scenarios that open TLS listeners
TLS_SCENARIOS = ("h2", "tls_connect")


class Skip(Exception):
    """A variant that cannot run here (the floor offering no h2); the reason is noted."""


def check_variant(var):
    svc = var["svc"]
    if var["prep"]:
        var["prep"](svc.port)
    port = svc.tls_port if var["tls"] else svc.port
    if var["tls"]:
        proto, version, cipher = tls_probe(port)
        var["tls_negotiated"] = f"{version} {cipher}"
    if var["tool"] == "h2load":
        if proto != "h2":
            raise Skip(f"{svc.name} offers no HTTP/2 by ALPN (it picked {proto or 'nothing'} "
                       "from h2, http/1.1)")
    headers = dict(var["headers"], **var["load_headers"])
    status, got_headers, body = http_request(port, var["path"], var["method"], headers,
                                             body=var["body"], tls=var["tls"])
    want_status, want_len = var["expect"]
    if status != want_status or (want_len is not None and len(body) != want_len):
        raise BenchError(f"{svc.name}: {var['method']} {var['path']} answers {status} with "
                         f"{len(body)} bytes; expected {want_status}"
                         + (f" with {want_len} bytes" if want_len is not None else ""))
    if var["tls"] and svc.kind not in BARE:
        missing = [h for h in EXPECTED_HEADERS + ("Strict-Transport-Security",)
                   if got_headers.get(h) is None]
        if missing:
            raise BenchError(f"{svc.name} does not send {', '.join(missing)} over TLS")
    if var["denied"] is not None:
        status, _, _ = http_request(port, var["path"], var["method"], var["headers"],
                                    body=var["body"], tls=var["tls"])
        if status != var["denied"]:
            raise BenchError(f"{svc.name}: {var['path']} without its credential answers "
                             f"{status}, expected {var['denied']}")


def run_variant(var, duration):
    svc = var["svc"]
    headers = [f"{k}: {v}" for k, v in var["load_headers"].items()]
    if var["tool"] == "h2load":
        return run_h2load(svc.tls_port, var["path"], H2_CONNECTIONS, H2_STREAMS,
                          duration, headers)
    port = svc.tls_port if var["tls"] else svc.port
    return run_wrk(port, var["path"], SCALING_CONNECTIONS, duration, var["script"],
                   var["args"], headers, "https" if var["tls"] else "http")


def run_scenario(key, title, note, variants, upstream, rounds, duration, progress):
    skipped = []
    for var in list(variants):
        try:
            check_variant(var)
        except Skip as e:
            log(f"[{key}] skipped: {e}")
            skipped.append(str(e))
            variants.remove(var)
        var["svc"].truncate_log()
    runs = []
    for rnd in range(1, rounds + 1):
        for i, var in enumerate(variants):
            progress["done"] += 1
            svc = var["svc"]
            if var["prep"]:
                var["prep"](svc.port)
            res = measure(svc, upstream, lambda: run_variant(var, duration))
            res.update(contender=svc.kind, instance=svc.name, variant=var["label"],
                       order=i, round=rnd, path=var["path"], idle_rss_kib=svc.idle_rss_kib)
            if var.get("tls_negotiated"):
                res["tls_negotiated"] = var["tls_negotiated"]
            runs.append(res)
            log(f"[{key} {progress['done']}/{progress['total']}] {svc.kind:6} "
                f"{var['label']:32} round {rnd}: {res['rps']:>10,.0f} req/s  "
                f"p99 {fmt_us(res['p99_us'])}  cpu {fmt_num(res['cpu_us_per_req'], 1)} us/req  "
                f"errors {res['errors']}")
    rows = summarize(runs, ("contender", "variant"))
    for row in rows:
        first = next(r for r in runs if r["contender"] == row["contender"]
                     and r["variant"] == row["variant"])
        row["order"] = first["order"]
        row["path"] = first["path"]
        row["idle_rss_kib"] = first["idle_rss_kib"]
        row["tls_negotiated"] = first.get("tls_negotiated")
        row["hits"] = next(v["hits"] for v in variants
                           if v["svc"].kind == row["contender"]
                           and v["label"] == row["variant"])
    rows.sort(key=lambda r: r["order"])
    for row in rows:
        base = next(r for r in rows if r["contender"] == row["contender"])
        row["baseline"] = base["variant"]
        row["rps_vs_baseline"] = ratio(row["rps"], base["rps"])
        row["cpu_vs_baseline"] = ratio(row["cpu_us_per_req"], base["cpu_us_per_req"])
        ref = next((r for r in rows if r["contender"] == "nginx"
                    and r["variant"] == row["variant"]), None)
        row["rps_vs_nginx"] = ratio(row["rps"], ref["rps"]) if ref else None
        row["cpu_vs_nginx"] = ratio(row["cpu_us_per_req"], ref["cpu_us_per_req"]) if ref else None
    return {"title": title, "note": note, "connections": SCALING_CONNECTIONS, "runs": runs,
            "summary": rows, "skipped": skipped}


def run_scenarios(sc, keys, upstream, rounds, duration):
    """Each scenario in turn: its variants take turns for `rounds` rounds. A scenario that
    fails is reported as failed and the others still run."""
    results = {}
    built = []
    for key in keys:
        try:
            title, note, variants, *found = SCENARIO_BUILDERS[key](sc)
        except (BenchError, OSError, subprocess.SubprocessError) as e:
            log(f"[{key}] could not be set up: {e}")
            results[key] = {"title": key, "failed": str(e)}
            continue
        if variants:
            built.append((key, title, note, variants, found[0] if found else []))
    progress = {"done": 0, "total": sum(len(b[3]) for b in built) * rounds}
    for key, title, note, variants, found in built:
        try:
            results[key] = run_scenario(key, title, note, variants, upstream, rounds,
                                        duration, progress)
            results[key]["found"] = found
        except (BenchError, OSError) as e:
            log(f"[{key}] failed: {e}")
            results[key] = {"title": title, "failed": str(e)}
    return {k: results[k] for k in keys if k in results}


def run_soak(pylon, upstream, seconds):
    """Pylon alone at 100 connections for `seconds`, its RSS sampled every 10 s."""
    pids = pylon.pids()
    start_rss = status_kib(pids, "VmRSS")
    cmd = wrk_command(pylon.port, "/api/small", 100, seconds)
    out_path = pylon.tmp / "soak-wrk.out"
    samples = []
    t0 = time.monotonic()
    ticks0 = cpu_ticks(pids)
    with open(out_path, "w") as out:
        wrk = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    wrk.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    pass
                elapsed = time.monotonic() - t0
                rss = status_kib(pylon.pids(), "VmRSS")
                samples.append({"t_s": round(elapsed, 1), "rss_kib": rss})
                log(f"[soak] {elapsed:6.0f} s  RSS {rss / 1024:.1f} MiB")
                # the pylon log file grows by about 100 bytes a request; keep it small
                pylon.truncate_log()
                if elapsed > seconds + 60:
                    raise BenchError(f"wrk did not finish the {seconds} s soak in time")
        finally:
            if wrk.poll() is None:
                wrk.kill()
                wrk.wait()
    if wrk.returncode != 0:
        raise BenchError(f"wrk failed in the soak:\n{out_path.read_text()}")
    res = parse_wrk(out_path.read_text())
    time.sleep(SETTLE)
    after = pylon.pids()
    if not after:
        raise BenchError(f"pylon died during the soak:\n{pylon.stderr_tail()}")
    n = res["requests"]
    res["cpu_us_per_req"] = (cpu_ticks(after) - ticks0) * 1e6 / CLK_TCK / n if n else None
    load_samples = [s["rss_kib"] for s in samples]
    res.update(seconds=seconds, connections=100, samples=samples, start_rss_kib=start_rss,
               peak_rss_kib=max(load_samples + [start_rss]),
               peak_hwm_kib=status_kib(after, "VmHWM"),
               end_rss_kib=load_samples[-1] if load_samples else None,
               after_load_rss_kib=status_kib(after, "VmRSS"),
               first_sample_rss_kib=load_samples[0] if load_samples else None)
    pylon.truncate_log()
    return res


# ---------------------------------------------------------------------------------------
# the report


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt_num(x, digits=0):
    return "—" if x is None else f"{x:,.{digits}f}"


def fmt_us(us):
    if us is None:
        return "—"
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1e6:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1e6:.2f} s"


def fmt_mib(kib):
    return "—" if kib is None else f"{kib / 1024:.1f}"


def fmt_ratio(x):
    return "—" if x is None else f"{x:.2f}×"


def fmt_change(x):
    return "—" if x is None else f"{(x - 1) * 100:+.0f}%"


def machine_info(tools):
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass

    git = tool_output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = tool_output(["git", "-C", str(REPO), "status", "--porcelain",
                         "--untracked-files=no"])
    def version(cmd, pattern):
        m = re.search(pattern, tool_output(cmd))
        return m.group(1) if m else "unknown"

    versions = {
        "pylon": version([str(PYLON), "--version"], r"(\S+)\s*$"),
        "git": git + (" with uncommitted changes" if dirty else ""),
        "nginx": version([tools["nginx"], "-v"], r"nginx/(\S+)"),
        "wrk": version(["wrk", "-v"], r"wrk (?:debian/)?(\S+)"),
    }
    if tools.get("haproxy"):
        versions["haproxy"] = version([tools["haproxy"], "-v"], r"HAProxy version (\S+)")
    if tools.get("caddy"):
        versions["caddy"] = version([tools["caddy"], "version"], r"v?(\d+\.\d+\.\d+\S*)")
    if tools.get("node"):
        versions["node"] = version([tools["node"], "--version"], r"v(\S+)")
        try:
            lock = json.loads((TUTORIAL / "package-lock.json").read_text())["packages"]
            for dep in ("express", "http-proxy-middleware"):
                versions[dep] = lock[f"node_modules/{dep}"]["version"]
        except (OSError, KeyError, ValueError):
            pass
    if tools.get("h2load"):
        versions["h2load"] = version([tools["h2load"], "--version"], r"nghttp2/(\S+)")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "versions": versions,
    }


def header_md(data, title):
    m, s = data["machine"], data["settings"]
    v = m["versions"]
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if k != "git")
    lines = [
        f"# {title}",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, "
        f"Linux {m['kernel']}",
        f"- Date: {m['date']}; load average at start "
        f"{' '.join(str(x) for x in m['load_average_at_start'])}",
        f"- Versions: {vers}; git {v['git']}",
        (f"- Settings: soak of {s['soak_s']} s at 100 connections, "
         if s.get("soak_s") else
         f"- Settings: {s['duration_s']} s per run, {s['rounds']} round(s), ")
        + f"wrk -t{WRK_THREADS} --latency, HTTP/1.1 keep-alive"
        + (" (quick mode)" if s.get("quick") else ""),
        "- Everything runs on 127.0.0.1 on this one machine: wrk, the contender and the nginx "
        "upstream (1 worker) share the cores, so the numbers compare the contenders with each "
        "other here, not with other machines.",
    ]
    return lines


def main_table_md(data):
    s = data["settings"]
    rows = data["main_summary"]
    lines = [
        "",
        "## Proxied GET /api/small (13-byte body)",
        "",
        f"Contenders took turns ({'/'.join(s['contenders'])}, repeated) for {s['rounds']} "
        f"round(s); medians shown, errors summed over the rounds.",
        "",
        "| contender | connections | req/s | ratio to nginx | p50 | p99 | CPU µs/req "
        "| peak RSS MiB | errors | upstream conns opened |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    nginx = {r["connections"]: r["rps"] for r in rows if r["contender"] == "nginx"}
    for r in sorted(rows, key=lambda r: (r["connections"], s["contenders"].index(r["contender"]))):
        lines.append(
            f"| {r['contender']} | {r['connections']:,} | {fmt_num(r['rps'])} "
            f"| {fmt_ratio(ratio(r['rps'], nginx.get(r['connections'])))} "
            f"| {fmt_us(r['p50_us'])} | {fmt_us(r['p99_us'])} "
            f"| {fmt_num(r['cpu_us_per_req'], 1)} | {fmt_mib(r['peak_rss_kib'])} "
            f"| {r['errors']:,} | {fmt_num(r['upstream_connections'])} |")
    if any(r.get("peak_rss_since") != "run" for r in data["main"]):
        lines += ["", "Warning: /proc/PID/clear_refs could not be written, so peak RSS is the "
                  "peak since each process started, not per run."]
    idle = data.get("idle_rss_kib", {})
    if idle:
        lines += ["", "Idle RSS right after start, before any load: "
                  + ", ".join(f"{k} {fmt_mib(val)} MiB" for k, val in idle.items()) + "."]
    logs = {}
    for r in rows:
        if r.get("access_log_bytes_per_req") is not None and r["contender"] not in BARE:
            logs.setdefault(r["contender"], []).append(r["access_log_bytes_per_req"])
    if logs:
        lines += ["", "Access log written per request (checks that every contender logs): "
                  + ", ".join(f"{k} {median(val):.0f} bytes" for k, val in logs.items()) + "."]
    up = {}
    for r in rows:
        if r.get("upstream_cpu_us_per_req") is not None and r.get("rps"):
            up.setdefault(r["contender"], []).append(
                (r["upstream_cpu_us_per_req"], r["upstream_cpu_us_per_req"] * r["rps"] / 1e4))
    if up:
        lines += ["", "The upstream nginx (1 worker, so at most one core) per request, and its "
                  "busiest share of a core: "
                  + ", ".join(f"{k} runs {median([u for u, _ in val]):.1f} µs, "
                              f"{max(b for _, b in val):.0f}%" for k, val in up.items()) + "."]
    return lines


def scaling_md(data):
    lines = []
    for key, exp in data.get("scaling", {}).items():
        kind = "Scaling" if key in ("routes", "clients", "bodies", "gateway_answers") else \
            "Scenario"
        lines += ["", f"## {kind} — {exp['title']}", ""]
        if exp.get("failed"):
            lines.append(f"Not measured: {exp['failed']}")
            continue
        lines.append(f"{exp['connections']} connections; each contender's first row is its "
                     "baseline." + (f" {exp['note']}" if exp.get("note") else ""))
        for reason in exp.get("skipped", ()):
            lines += ["", f"Left out: {reason}."]
        rows = exp["summary"]
        tls = {}
        for r in rows:
            if r.get("tls_negotiated"):
                tls.setdefault(r["contender"], r["tls_negotiated"])
        if tls:
            lines += ["", "TLS as a Python client (OpenSSL, TLS 1.2-1.3) negotiates it: "
                      + ", ".join(f"{k} {v}" for k, v in tls.items()) + "."]
        vs_nginx = any(r.get("rps_vs_nginx") is not None for r in rows
                       if r["contender"] != "nginx")
        head = ("| contender | variant | req/s | req/s vs baseline | p50 | p99 | CPU µs/req "
                "| CPU vs baseline |")
        rule = "|---|---|---:|---:|---:|---:|---:|---:|"
        if vs_nginx:
            head += " req/s vs nginx | CPU vs nginx |"
            rule += "---:|---:|"
        head += " peak RSS MiB | idle RSS MiB | non-2xx | socket errors |"
        rule += "---:|---:|---:|---:|"
        lines += ["", head, rule]
        for r in rows:
            line = (f"| {r['contender']} | {r['variant']} | {fmt_num(r['rps'])} "
                    f"| {fmt_ratio(r['rps_vs_baseline'])} | {fmt_us(r['p50_us'])} "
                    f"| {fmt_us(r['p99_us'])} | {fmt_num(r['cpu_us_per_req'], 1)} "
                    f"| {fmt_change(r['cpu_vs_baseline'])} |")
            if vs_nginx:
                line += (f" {fmt_ratio(r.get('rps_vs_nginx'))} "
                         f"| {fmt_ratio(r.get('cpu_vs_nginx'))} |")
            line += (f" {fmt_mib(r['peak_rss_kib'])} | {fmt_mib(r['idle_rss_kib'])} "
                     f"| {r['non_2xx']:,} | {r['socket_errors']:,} |")
            lines.append(line)
        hit_rows = [r for r in rows if r.get("hits")]
        if hit_rows:
            lines += ["", "Requests that reached the upstream during the hit runs "
                      "(stub_status; 0 when every answer was a hit): "
                      + ", ".join(f"{r['contender']} "
                                  + ("unknown" if r.get("upstream_requests") is None else
                                     f"{r['upstream_requests']:,} of {r['requests']:,}")
                                  for r in hit_rows) + "."]
        for found in exp.get("found", ()):
            lines += ["", f"Found: {found}."]
        if key == "cache":
            lines += cache_targets_md(rows)
    return lines


def cache_targets_md(rows):
    """The cache's targets (issue 26), reported, not enforced: Pylon's hits at least twice
    its proxied req/s, its CPU per hit at or below nginx's."""
    def row(contender, hits):
        return next((r for r in rows if r["contender"] == contender
                     and bool(r.get("hits")) == hits), None)
    p_proxy, p_hit, n_hit = row("pylon", False), row("pylon", True), row("nginx", True)
    lines = []
    if p_proxy and p_hit and p_proxy["rps"] and p_hit["rps"]:
        x = p_hit["rps"] / p_proxy["rps"]
        lines.append(f"- Pylon's hits at least 2x its proxied req/s: {x:.2f}x "
                     f"({fmt_num(p_hit['rps'])} vs {fmt_num(p_proxy['rps'])}): "
                     + ("met" if x >= 2 else "not met"))
    if p_hit and n_hit and p_hit["cpu_us_per_req"] and n_hit["cpu_us_per_req"]:
        ok = p_hit["cpu_us_per_req"] <= n_hit["cpu_us_per_req"]
        lines.append(f"- Pylon's CPU per hit at or below nginx's: "
                     f"{p_hit['cpu_us_per_req']:.1f} vs {n_hit['cpu_us_per_req']:.1f} µs: "
                     + ("met" if ok else "not met"))
    return ["", "Targets (reported, not enforced):", ""] + lines if lines else []


NOTES = [
    "",
    "## How to read this",
    "",
    "- req/s, p50, p99: wrk's (`--latency`), median over the rounds; for the HTTP/2 rows "
    "h2load's (requests that succeeded over the run's duration; percentiles of the "
    "latencies in its --log-file).",
    "- CPU µs/req: utime + stime of all the contender's processes (nginx's master and "
    f"workers) from /proc/PID/stat, from before the run to {SETTLE} s after it (so buffered "
    "log writes are counted), divided by the requests the load generator completed.",
    "- vs baseline: against the contender's first row in the same table (the open route, "
    "the empty body, HTTPS/1.1); vs nginx: against nginx's row with the same variant.",
    "- Peak RSS: the sum of VmHWM over the contender's processes, reset before each run "
    "(/proc/PID/clear_refs); pages shared between nginx's workers count once per process.",
    "- errors: non-2xx/3xx answers plus socket errors (connect, read, write, timeout).",
    "- upstream conns opened: connections the upstream nginx accepted during a run "
    "(stub_status); with working upstream keepalive it stays near the number of "
    "connections, far below the number of requests.",
    "- The contenders do the same policy work: /api stripped, upstream keepalive, helmet's "
    "11 security headers (its 12th, Strict-Transport-Security, goes over TLS only), CORS, "
    "X-Request-Id, X-Forwarded-*, a per-client rate limit that never triggers, a combined "
    "access log to a file (benches/pylon.toml, benches/peers/nginx.conf, "
    "benches/peers/haproxy.cfg). Caddy (benches/peers/Caddyfile) has no rate limiter in its "
    "standard modules and logs JSON. The tutorial's Node gateway (benches/tutorial) is one "
    "Node process with http-proxy's defaults: a new upstream connection per request, and "
    "helmet sends Strict-Transport-Security over plain HTTP too.",
    "- floor: benches/floor.rs, a bare Pingora proxy (upstream_peer only, Pylon's threads, "
    "allocator and release profile) asked for /small directly: no policy, no log. What it "
    "costs is what the engine costs; Pylon's own work is the difference.",
]


def write_main_results(data, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    md = header_md(data, "Pylon load benchmark") + main_table_md(data) + scaling_md(data) + NOTES
    text = "\n".join(md) + "\n"
    (out_dir / "latest.md").write_text(text)
    (out_dir / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    chart(out_dir / "latest.json", out_dir / "latest.png")
    return text


def write_soak_results(data, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    s = data["soak"]
    md = header_md(data, "Pylon soak") + [
        "",
        f"## Pylon alone, GET /api/small, 100 connections for {s['seconds']} s",
        "",
        "| req/s | p50 | p99 | CPU µs/req | errors | RSS start MiB | RSS first sample MiB "
        "| RSS peak MiB | RSS end MiB | RSS after load MiB | VmHWM MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {fmt_num(s['rps'])} | {fmt_us(s['p50_us'])} | {fmt_us(s['p99_us'])} "
        f"| {fmt_num(s['cpu_us_per_req'], 1)} | {s['errors']:,} | {fmt_mib(s['start_rss_kib'])} "
        f"| {fmt_mib(s['first_sample_rss_kib'])} | {fmt_mib(s['peak_rss_kib'])} "
        f"| {fmt_mib(s['end_rss_kib'])} | {fmt_mib(s['after_load_rss_kib'])} "
        f"| {fmt_mib(s['peak_hwm_kib'])} |",
        "",
        "RSS start: VmRSS before the load (idle right after start: "
        f"{fmt_mib(data['idle_rss_kib'].get('pylon'))} MiB); first sample, peak and end: "
        "VmRSS sampled under load; after load: 1.2 s after wrk ended; VmHWM: the peak since "
        "the process started. Growth from the first sample to the end points to a leak.",
        "",
        "RSS (VmRSS) every 10 s: "
        + (", ".join(f"{x['t_s']:.0f} s {fmt_mib(x['rss_kib'])}" for x in s["samples"])
           or "no sample (the soak was shorter than 10 s)") + " MiB.",
    ]
    text = "\n".join(md) + "\n"
    (out_dir / "soak.md").write_text(text)
    (out_dir / "soak.json").write_text(json.dumps(data, indent=2) + "\n")
    return text


def draw_chart(json_path, png_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    data = json.loads(Path(json_path).read_text())
    rows = data["main_summary"]
    contenders = [c for c in data["settings"]["contenders"]
                  if any(r["contender"] == c for r in rows)]
    levels = sorted({r["connections"] for r in rows})
    value = {(r["contender"], r["connections"]): r for r in rows}
    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(14, 5))
    width = 0.8 / max(len(contenders), 1)
    colors = {"pylon": "#d9534f", "floor": "#f0ad4e", "nginx": "#2e8b57",
              "haproxy": "#3b6ea8", "caddy": "#6f42c1", "tutorial": "#7f7f7f"}
    for i, c in enumerate(contenders):
        xs = [j + (i - (len(contenders) - 1) / 2) * width for j in range(len(levels))]
        rps = [(value.get((c, lv)) or {}).get("rps") or 0 for lv in levels]
        p99 = [((value.get((c, lv)) or {}).get("p99_us") or 0) / 1000 for lv in levels]
        bars = ax_rps.bar(xs, rps, width, label=c, color=colors.get(c))
        ax_rps.bar_label(bars, labels=[f"{x / 1000:.1f}k" for x in rps], fontsize=6, padding=2)
        bars = ax_p99.bar(xs, p99, width, label=c, color=colors.get(c))
        ax_p99.bar_label(bars, labels=[f"{x:.2f}" for x in p99], fontsize=6, padding=2)
    for ax, title, unit in ((ax_rps, "Requests per second (higher is better)", "req/s"),
                            (ax_p99, "p99 latency (lower is better)", "ms")):
        ax.set_xticks(range(len(levels)))
        ax.set_xticklabels([f"{lv:,} connections" for lv in levels])
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.margins(y=0.15)
    ax_rps.yaxis.set_major_formatter(
        matplotlib.ticker.FuncFormatter(lambda x, _pos: f"{x:,.0f}"))
    handles, labels = ax_rps.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(len(contenders), 1),
               frameon=False)
    m, s = data["machine"], data["settings"]
    fig.suptitle(f"GET /api/small through each gateway — {m['cores']} cores, {m['cpu']}; "
                 f"median of {s['rounds']} round(s) of {s['duration_s']} s", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def chart(json_path, png_path):
    """Draw the chart here, or with the system Python when this one lacks matplotlib."""
    try:
        draw_chart(json_path, png_path)
        return
    except ImportError:
        pass
    for python in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(python, os.X_OK) and os.path.realpath(python) != os.path.realpath(
                sys.executable):
            p = subprocess.run([python, __file__, "--chart-only", str(json_path),
                                "--chart-out", str(png_path)], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=120)
            if p.returncode == 0:
                return
    log("no chart: matplotlib is missing (apt-get install python3-matplotlib)")


# ---------------------------------------------------------------------------------------
# main


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, help="seconds per run (default 10; --quick 3)")
    p.add_argument("--rounds", type=int, help="rounds of A/B/C turns (default 2; --quick 1)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 3 s, 1 round, 100 connections only; each scenario 2 s")
    p.add_argument("--only", help="contenders to run, comma-separated: "
                   + ",".join(CONTENDERS))
    p.add_argument("--skip-scaling", action="store_true",
                   help="only the main comparison, no scenarios")
    p.add_argument("--scenarios", help="the scenarios to run, comma-separated (default all): "
                   + ",".join(SCENARIOS))
    p.add_argument("--connections", help="connection counts (default 10,100,1000)")
    p.add_argument("--soak", type=int, metavar="SECONDS",
                   help="Pylon alone at 100 connections this long, RSS sampled every 10 s")
    p.add_argument("--out", type=Path, default=BENCHES / "results",
                   help="where results go (default benches/results)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    p.add_argument("--chart-only", metavar="JSON", help=argparse.SUPPRESS)
    p.add_argument("--chart-out", metavar="PNG", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.duration is None:
        a.duration = 3 if a.quick else 10
    if a.rounds is None:
        a.rounds = 1 if a.quick else 2
    if a.duration < 1 or a.rounds < 1:
        p.error("--duration and --rounds must be at least 1")
    if a.connections:
        a.levels = tuple(int(x) for x in a.connections.split(","))
    else:
        a.levels = (100,) if a.quick else CONNECTIONS
    if any(c < 1 for c in a.levels):
        p.error("connection counts must be at least 1")
    a.scenario_duration = min(2, a.duration) if a.quick else a.duration
    if a.scenarios:
        a.scenarios = [x.strip() for x in a.scenarios.split(",") if x.strip()]
        unknown = [x for x in a.scenarios if x not in SCENARIOS]
        if unknown:
            p.error(f"--scenarios takes some of {','.join(SCENARIOS)}")
        a.scenarios = [x for x in SCENARIOS if x in a.scenarios]
    else:
        a.scenarios = list(SCENARIOS)
    if a.skip_scaling:
        a.scenarios = []
    if a.only:
        a.contenders = [c.strip() for c in a.only.split(",") if c.strip()]
        unknown = [c for c in a.contenders if c not in CONTENDERS]
        if unknown or not a.contenders:
            p.error(f"--only takes some of {','.join(CONTENDERS)}")
        a.contenders = [c for c in CONTENDERS if c in a.contenders]
    else:
        a.contenders = list(CONTENDERS)
    if a.soak is not None:
        if a.soak < 1:
            p.error("--soak takes a number of seconds")
        a.contenders = ["pylon"]
        a.scenarios = []
    return a


def find_tools(args):
    tools = {}
    missing = []
    # a contender's tool: its Debian package is named the same, but for node (nodejs)
    needs = {"haproxy": "haproxy", "caddy": "caddy", "tutorial": "node"}
    names = ["wrk", "nginx"] + [needs[c] for c in args.contenders if c in needs]
    if "h2" in args.scenarios:
        names.append("h2load")
    if {"auth", "h2", "tls_connect"} & set(args.scenarios):
        names.append("openssl")
    for name in names:
        tools[name] = find_tool(name)
        if tools[name] is None:
            missing.append(name)
    if missing:
        raise BenchError(f"missing on PATH: {', '.join(missing)}; `make bench-deps` installs "
                         "them (Debian packages wrk, nginx-light, haproxy, caddy, nodejs, "
                         "nghttp2-client, openssl)")
    for kind, binary in (("pylon", PYLON), ("floor", FLOOR)):
        if kind in args.contenders and not binary.exists():
            raise BenchError(f"{binary} is missing: build it with `cargo build --release "
                             "--bins` (or set PYLON_BIN / FLOOR_BIN)")
    if tomllib is None:
        raise BenchError("Python 3.11 or newer is needed (tomllib)")
    tools["nginx_realip"] = nginx_has_realip(tools["nginx"])
    tools["nginx_stub_status"] = "http_stub_status_module" in tool_output([tools["nginx"], "-V"])
    return tools


def raise_fd_limit(levels):
    """Raise the open files limit for wrk and, inherited, the contenders."""
    want = 65536
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard >= want:
        attempts = [(want, hard)]
    else:
        attempts = [(want, want), (hard, hard)]  # raising the hard limit needs privilege
    for limit in attempts:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            break
        except (ValueError, OSError):
            continue
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * max(levels) + 256  # a gateway holds a client and an upstream socket per request
    if soft < need:
        raise BenchError(f"open files limit {soft} is too low for {max(levels)} connections "
                         f"(need {need}); raise it with ulimit -n")
    return soft


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.chart_only:
        draw_chart(args.chart_only, args.chart_out or Path(args.chart_only).with_suffix(".png"))
        return 0
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    tmp = None
    failed = True
    try:
        tools = find_tools(args)
        os.environ["PATH"] = os.path.dirname(tools["wrk"]) + os.pathsep + os.environ["PATH"]
        fd_limit = raise_fd_limit(args.levels)
        tmp = Path(tempfile.mkdtemp(prefix="pylon-bench-"))
        os.chmod(tmp, 0o755)  # nginx workers may run as nobody
        log(f"temp dir {tmp}; open files limit {fd_limit}")
        machine = machine_info(tools)
        settings = {"duration_s": args.duration, "rounds": args.rounds, "quick": args.quick,
                    "scenarios": args.scenarios,
                    "scenario_duration_s": args.scenario_duration,
                    "connections": list(args.levels), "contenders": args.contenders,
                    "wrk_threads": WRK_THREADS, "wrk_timeout": WRK_TIMEOUT,
                    "upstream": f"nginx, 1 worker, 127.0.0.1:{UPSTREAM_PORT}",
                    "ports": {c: PORTS[c] for c in args.contenders}}

        upstream = start_upstream(tools, tmp)
        contenders = [start_contender(kind, tools, tmp) for kind in args.contenders]
        for svc in contenders:
            check_proxied(svc)
        check_access_logs(contenders)
        idle = {svc.name: svc.idle_rss_kib for svc in contenders}

        if args.soak is not None:
            data = {"machine": machine, "settings": dict(settings, soak_s=args.soak,
                                                         connections=[100]),
                    "idle_rss_kib": idle}
            data["soak"] = run_soak(contenders[0], upstream, args.soak)
            text = write_soak_results(data, args.out)
        else:
            # a short unmeasured run each: upstream connections, caches, page faults
            for svc in contenders:
                run_wrk(svc.port, svc.api("/small"), 100, min(2, args.duration))
                time.sleep(0.5)
                svc.truncate_log()
            runs = run_main(contenders, upstream, args.levels, args.rounds, args.duration)
            data = {"machine": machine, "settings": settings, "idle_rss_kib": idle,
                    "main": runs, "main_summary": summarize(runs, ("contender", "connections"))}
            if args.scenarios:
                sc = Scenarios({svc.kind: svc for svc in contenders}, tools, tmp,
                               args.scenario_duration)
                data["scaling"] = run_scenarios(sc, args.scenarios, upstream, args.rounds,
                                                args.scenario_duration)
                sc.stop_extras()
            text = write_main_results(data, args.out)
        print(text, end="")
        failed = False
        return 0
    except BenchError as e:
        log(f"load.py: {e}")
        return 1
    except KeyboardInterrupt:
        log("load.py: interrupted")
        return 130
    finally:
        stop_all()
        if tmp is not None:
            if failed or args.keep_tmp:
                log(f"load.py: configs and logs kept in {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

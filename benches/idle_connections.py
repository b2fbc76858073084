#!/usr/bin/env python3
"""Memory per idle connection: what a gateway holds for a client that made a request and
then keeps its connection open, doing nothing (issue #16).

    python3 benches/idle_connections.py [--gateway pylon,nginx,floor]
                                        [--modes plain,tls,ws,h2idle]
                                        [--counts 3000,20000] [--settle S] [--after S]
                                        [--out FILE]

Starts an nginx upstream (benches/peers/upstream.conf, fixed bodies), a silent WebSocket
upstream (this file with --ws-upstream: it accepts the upgrade and then says nothing) and,
for each gateway, mode and count, a fresh gateway on loopback:

    pylon   PYLON_BIN (default target/release/pylon), 2 threads, the policy work of
            benches/pylon.toml (rate limit, security headers, CORS, combined access log)
    nginx   benches/peers/nginx.conf (2 workers, the same policy work), plus a TLS
            listener and a WebSocket location
    floor   FLOOR_BIN (default target/release/pylon-floor, benches/floor.rs): bare
            Pingora with Pylon's threads, plain and TLS listeners, its one upstream the
            nginx one (asked for /small: it strips no prefix) or, for WebSockets, the
            silent one

Each run: warm the gateway up (100 connections that make one request and close from
each client process the run then uses, so that as many requests are in flight at once
and the upstream pool grows as large as the run leaves it), wait AFTER seconds (or
SETTLE, if longer) and read its memory ("before"); open COUNT connections that each send
one GET (plain HTTP/1.1 keep-alive, the same over TLS with a self-signed certificate, or
a WebSocket upgrade) and read the whole answer, then stay idle; after SETTLE seconds read
the memory again ("open"); close them all, wait AFTER seconds (default 8) and read it a
last time ("after"). "after vs fresh" compares it with the gateway's memory as it
started, before the warm-up: an upper bound of what stays, as it counts what any
traffic leaves in place (the pool, lazy statics, the allocator's first pages). The
memory is VmRSS from /proc/PID/status (summed over nginx's master and workers) and the
anonymous memory from /proc/PID/smaps_rollup; per connection is (open - before) / COUNT.

Mode h2idle (Pylon only, issue 23): each connection speaks cleartext HTTP/2 (h2c), makes
one GET on stream 1, reads the answer and stays idle; the gateway runs with
`client_idle = "IDLE"` (--h2-idle, default 10 s). "after" is then read IDLE + AFTER seconds
after the connections opened, before the clients close anything: the gateway's own idle
close (GOAWAY) is what brings the memory back, and "alive" counts the connections still
open when the clients finally close theirs.

Clients are asyncio sockets in child processes of at most 5,000 each, spread over the
source addresses 127.0.0.2-127.0.0.33 so that 20,000 of them never run out of ephemeral
ports. The harness raises RLIMIT_NOFILE as far as it may (the hard limit, or more with
CAP_SYS_RESOURCE); a count that the gateway could not hold within it (each client is a
descriptor, a WebSocket two) is lowered to what fits, and the log says so. Every
process the harness starts is stopped at the end; every phase is bounded in time;
nothing leaves 127.0.0.1. Results are printed as Markdown (and written to --out).
"""

import argparse
import asyncio
import base64
import hashlib
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the load harness beside this file: its errors and its config templating
from load import BenchError, fill_template

REPO = Path(__file__).resolve().parent.parent
PEERS = REPO / "benches" / "peers"
PYLON = Path(os.environ.get("PYLON_BIN") or REPO / "target" / "release" / "pylon")
FLOOR = Path(os.environ.get("FLOOR_BIN") or REPO / "target" / "release" / "pylon-floor")

HOST = "127.0.0.1"
UPSTREAM_PORT = 18280
WS_PORT = 18285
PLAIN_PORT = 18281
TLS_PORT = 18282
# source addresses for the clients: 32 × ~28,000 ephemeral ports
SOURCES = [f"127.0.0.{i}" for i in range(2, 34)]
# IP_BIND_ADDRESS_NO_PORT: pick the source port at connect(), by the whole 4-tuple
IP_BIND_ADDRESS_NO_PORT = 24
# connections each client process sets up at once: enough to be quick, few enough that
# the gateway's upstream pool (and nginx's) stays small
CONCURRENCY = 100
# one round of CONCURRENCY connections from each client process before "before": the
# upstream pool, the lazy statics and the allocator's first pages are then in place. With
# one warm-up process for four measured ones, the run found up to four times the requests
# in flight, and its "after" also counted the idle upstream connections the pool added
# then (kept for upstream_idle, 60 s) as memory not given back. Not more: what the
# warm-up frees stays in the allocator and is reused by the first measured connections,
# which would understate the cost of each (by at most 400 of 19,500 here)
WARMUP = CONCURRENCY
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PHASE_TIMEOUT = 300


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raise_nofile(want=200_000):
    """Room for 20,000 client sockets here and as many in each server (children inherit)."""
    try:
        cap = int(Path("/proc/sys/fs/nr_open").read_text())
    except OSError:
        cap = want
    want = min(want, cap)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------------------------------
# memory of a process and its children


def family(pid):
    """The process and its children (nginx's workers)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid] + [int(k) for k in out.split()]


def memory_kib(pid):
    """(VmRSS, anonymous RSS) in KiB, summed over the process and its children."""
    rss = anon = 0
    for p in family(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Anonymous:"):
                    anon += int(line.split()[1])
        except OSError:
            pass
    return rss, anon


def settled_memory(pid, seconds):
    """Memory once it has stopped moving: sampled every 0.5 s for `seconds`, the last."""
    until = time.monotonic() + seconds
    sample = memory_kib(pid)
    while time.monotonic() < until:
        time.sleep(0.5)
        sample = memory_kib(pid)
    return sample


# ---------------------------------------------------------------------------------------
# servers


class Service:
    """A process started here and stopped at the end, whatever happens."""

    running = []

    def __init__(self, name, cmd, tmp, stop_signal=signal.SIGTERM, env=None):
        self.name, self.cmd, self.stop_signal = name, [str(c) for c in cmd], stop_signal
        self.out = open(tmp / f"{name}.out", "wb")
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, env=env, cwd=tmp)
        Service.running.append(self)

    @property
    def pid(self):
        return self.proc.pid

    def wait_port(self, port, timeout=30):
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited: {self.tail()}")
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise BenchError(f"{self.name} does not listen on {port}: {self.tail()}")

    def tail(self):
        self.out.flush()
        try:
            return Path(self.out.name).read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.out.close()
        if self in Service.running:
            Service.running.remove(self)


def stop_all():
    for svc in list(Service.running):
        svc.stop()


def run(main, name):
    """Runs a bench's main: a BenchError or ^C stops every service it started and exits."""
    try:
        main()
    except BenchError as e:
        stop_all()
        print(f"{name}: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)


def start_upstream(tmp):
    www = tmp / "www"
    www.mkdir()
    for name, size in (("empty", 0), ("1k", 1024), ("1m", 1 << 20)):
        (www / name).write_bytes(b"x" * size)
    (tmp / "upstream-tmp").mkdir()
    conf = fill_template(PEERS / "upstream.conf", tmp / "upstream.conf", TMP=tmp, WWW=www,
                PORT=UPSTREAM_PORT, STATUS="")
    svc = Service("upstream", ["nginx", "-p", tmp, "-e", tmp / "upstream-error.log", "-c",
                               conf], tmp)
    svc.wait_port(UPSTREAM_PORT)
    return svc


def start_ws_upstream(tmp):
    svc = Service("ws-upstream", [sys.executable, Path(__file__).resolve(), "--ws-upstream",
                                  WS_PORT], tmp)
    svc.wait_port(WS_PORT)
    return svc


def make_certificate(tmp):
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def pylon_config(tmp, name, cert, key, client_idle="600s", h2c=False):
    """benches/pylon.toml's policy work, with room for 20,000 idle clients."""
    conf = tmp / f"{name}.toml"
    conf.write_text(f"""\
[server]
listen = ["{HOST}:{PLAIN_PORT}"]
threads = 2
pid_file = "{tmp}/{name}.pid"
upgrade_sock = "{tmp}/{name}.sock"
trusted_proxies = ["127.0.0.0/8"]
max_connections = 100000
h2c = {"true" if h2c else "false"}

[tls]
listen = ["{HOST}:{TLS_PORT}"]
h2 = false
[[tls.certificates]]
cert = "{cert}"
key = "{key}"

[access_log]
path = "{tmp}/{name}-access.log"
format = "combined"

[timeouts]
connect = "2s"
read = "15s"
client_header = "60s"
client_idle = "{client_idle}"

[rate_limit]
requests = 1000000000
window = "1m"

[cors]
enabled = true

[security_headers]
enabled = true

[[routes]]
prefix = "/api"
upstreams = ["http://{HOST}:{UPSTREAM_PORT}"]

[[routes]]
prefix = "/ws"
upstreams = ["http://{HOST}:{WS_PORT}"]
""")
    return conf


def start_pylon(tmp, name, binary, cert, key, client_idle="600s", h2c=False):
    conf = pylon_config(tmp, name, cert, key, client_idle, h2c)
    env = dict(os.environ, RUST_LOG="warn")
    svc = Service(name, [binary, "-c", conf], tmp, signal.SIGINT, env=env)
    svc.wait_port(PLAIN_PORT, timeout=60)
    svc.wait_port(TLS_PORT, timeout=60)
    return svc


def start_floor(tmp, name, binary, cert, key, mode):
    """The floor with Pylon's 2 threads; it has one upstream, so a WebSocket run points it
    at the silent WebSocket upstream."""
    upstream = WS_PORT if mode == "ws" else UPSTREAM_PORT
    env = dict(os.environ, RUST_LOG="warn")
    svc = Service(name, [binary, "--listen", f"{HOST}:{PLAIN_PORT}", "--tls-listen",
                         f"{HOST}:{TLS_PORT}", "--cert", cert, "--key", key, "--upstream",
                         f"{HOST}:{upstream}", "--threads", "2"], tmp, signal.SIGINT, env=env)
    svc.wait_port(PLAIN_PORT, timeout=60)
    svc.wait_port(TLS_PORT, timeout=60)
    return svc


def start_nginx(tmp, cert, key):
    # the peer config as load.py runs it, plus a TLS listener and a WebSocket location;
    # room for 20,000 idle clients, kept for longer than a run takes
    extra = f"""
        listen {HOST}:{TLS_PORT} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location /ws/ {{
            proxy_pass http://{HOST}:{WS_PORT};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
"""
    realip = ("set_real_ip_from 127.0.0.0/8;\n    real_ip_header X-Forwarded-For;\n"
              "    real_ip_recursive on;")
    (tmp / "nginx-tmp").mkdir(exist_ok=True)
    conf = fill_template(PEERS / "nginx.conf", tmp / "nginx.conf", TMP=tmp, NAME="nginx",
                PORT=PLAIN_PORT, UPSTREAM_PORT=UPSTREAM_PORT, REALIP=realip,
                EXTRA_LOCATIONS=extra, HTTP_EXTRA="")
    text = conf.read_text()
    text = text.replace("worker_connections 16384;", "worker_connections 65536;")
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    text = text.replace("worker_rlimit_nofile 65536;", f"worker_rlimit_nofile {nofile};")
    text = text.replace("keepalive_timeout 75s;", "keepalive_timeout 600s;")
    conf.write_text(text)
    svc = Service("nginx", ["nginx", "-p", tmp, "-e", tmp / "nginx-error.log", "-c", conf],
                  tmp)
    svc.wait_port(PLAIN_PORT)
    svc.wait_port(TLS_PORT)
    return svc


# ---------------------------------------------------------------------------------------
# the silent WebSocket upstream (run as its own process)


async def ws_upstream(port):
    async def handle(reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", head)
            if m:
                accept = base64.b64encode(hashlib.sha1(m.group(1) + WS_GUID).digest())
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                             b"\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close"
                             b"\r\n\r\nok\n")
            await writer.drain()
            # then silence, until the other side leaves
            while await reader.read(65536):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, HOST, port, backlog=4096)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------------------------------
# clients


def request_bytes(mode, i, prefix):
    """The request of connection i; prefix: where the gateway has the upstream's paths
    (/api; the floor strips nothing: "")."""
    if mode == "ws":
        key = base64.b64encode(i.to_bytes(16, "big")).decode()
        return (f"GET /ws/chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
    return (f"GET {prefix}/small HTTP/1.1\r\nHost: localhost\r\nUser-Agent: idle-bench"
            f"\r\n\r\n").encode()


async def read_answer(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status == 101:
        return status
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if m:
        await reader.readexactly(int(m.group(1)))
    elif re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(kind, flags, stream, payload=b""):
    return (len(payload).to_bytes(3, "big") + bytes([kind, flags])
            + stream.to_bytes(4, "big") + payload)


def h2_get(path):
    """The preface, an empty SETTINGS, and GET `path` on stream 1 (HPACK: :method GET and
    :scheme http from the static table, :path and :authority as literals)."""
    block = bytes([0x82, 0x86, 0x04, len(path)]) + path.encode()
    block += bytes([0x01, len("localhost")]) + b"localhost"
    return H2_PREFACE + h2_frame(0x4, 0, 0) + h2_frame(0x1, 0x5, 1, block)


async def read_h2_answer(reader, writer):
    """Frames until stream 1 ends; acknowledges the server's SETTINGS. Returns True when a
    response HEADERS came on stream 1."""
    answered = False
    while True:
        head = await reader.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        await reader.readexactly(length)
        if kind == 0x4 and not flags & 0x1:
            writer.write(h2_frame(0x4, 0x1, 0))
        if stream == 1 and kind == 0x1:
            answered = True
        if stream == 1 and kind in (0x0, 0x1) and flags & 0x1:
            return answered
        if kind == 0x7:
            return False


async def open_one(i, mode, tls_ctx, prefix):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((SOURCES[i % len(SOURCES)], 0))
        sock.setblocking(False)
        port = TLS_PORT if mode == "tls" else PLAIN_PORT
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    except BaseException:
        sock.close()
        raise
    if mode == "tls":
        reader, writer = await asyncio.open_connection(sock=sock, ssl=tls_ctx,
                                                       server_hostname="localhost")
    else:
        reader, writer = await asyncio.open_connection(sock=sock)
    if mode == "h2idle":
        writer.write(h2_get(f"{prefix}/small"))
        await writer.drain()
        if not await read_h2_answer(reader, writer):
            writer.close()
            raise BenchError(f"connection {i}: no HTTP/2 answer")
        return reader, writer
    writer.write(request_bytes(mode, i, prefix))
    await writer.drain()
    status = await read_answer(reader)
    want = 101 if mode == "ws" else 200
    if status != want:
        writer.close()
        raise BenchError(f"connection {i}: status {status}, expected {want}")
    return reader, writer


async def open_many(n, mode, tls_ctx, prefix, first=0):
    sem = asyncio.Semaphore(CONCURRENCY)
    errors = []

    async def one(i):
        async with sem:
            try:
                return await asyncio.wait_for(open_one(i, mode, tls_ctx, prefix), 30)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    BenchError) as e:
                errors.append(f"{type(e).__name__}: {e}")
                return None

    conns = await asyncio.wait_for(
        asyncio.gather(*(one(first + i) for i in range(n))), PHASE_TIMEOUT)
    opened = [c for c in conns if c is not None]
    if errors:
        log(f"  {len(errors)} of {n} connections failed, e.g. {errors[0]}")
    return opened


async def close_many(conns):
    for _, writer in conns:
        writer.transport.abort()
    await asyncio.sleep(0.2)


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def client_main(mode, count, first, prefix):
    """One client process: open `count` connections, say so, hold them until told (a line
    on stdin), close them, say so."""
    conns = await open_many(count, mode, tls_context(), prefix, first=first)
    print(f"opened {len(conns)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    # a connection the gateway closed meanwhile reaches EOF once what it sent last (an
    # HTTP/2 GOAWAY) is read
    alive = 0
    for r, _ in conns:
        try:
            while await asyncio.wait_for(r.read(65536), 0.05):
                pass
        except asyncio.TimeoutError:
            alive += 1
    await close_many(conns)
    print(f"closed {alive}", flush=True)


class Clients:
    """COUNT client connections, spread over processes of at most PER_PROCESS each (a
    process here may hold no more descriptors than RLIMIT_NOFILE allows)."""

    def __init__(self, mode, count, first, per_process, prefix):
        self.procs = []
        for start in range(0, count, per_process):
            n = min(per_process, count - start)
            self.procs.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--client", mode, str(n),
                 str(first + start), prefix],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))

    def _replies(self, word):
        total = 0
        for p in self.procs:
            line = p.stdout.readline().split()
            if len(line) != 2 or line[0] != word:
                raise BenchError(f"a client process said {line!r} instead of {word}")
            total += int(line[1])
        return total

    def opened(self):
        return self._replies("opened")

    def close(self):
        for p in self.procs:
            p.stdin.write("close\n")
            p.stdin.flush()
        alive = self._replies("closed")
        for p in self.procs:
            p.wait(timeout=60)
        return alive

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def run_one(svc, mode, count, settle, after, per_process, prefix, h2_idle=None):
    fresh = memory_kib(svc.pid)
    processes = -(-count // per_process)
    warmup = WARMUP * processes
    warm = Clients(mode, warmup, 0, WARMUP, prefix)
    try:
        warm.opened()
        warm.close()
    finally:
        warm.kill()
    # read as long after the warm-up's close as "after" is read after the run's: what the
    # warm-up's connections leave is then counted the same way as what the run's leave
    before = settled_memory(svc.pid, max(settle, after))
    started = time.monotonic()
    clients = Clients(mode, count, warmup, per_process, prefix)
    try:
        # bounded: each connection has 30 s, and a process opens them CONCURRENCY at a time
        opened = clients.opened()
        opening = time.monotonic() - started
        held = settled_memory(svc.pid, settle)
        if h2_idle is not None:
            # the gateway closes them itself: read the memory before the clients let go
            wait = started + h2_idle - time.monotonic()
            closed = settled_memory(svc.pid, max(wait, 0) + after)
        alive = clients.close()
    finally:
        clients.kill()
    if h2_idle is None:
        closed = settled_memory(svc.pid, after)
    return {"fresh": fresh, "before": before, "open": held, "after": closed, "opened": opened,
            "alive": alive, "seconds": opening}


# ---------------------------------------------------------------------------------------
# report


def table(rows):
    out = ["| gateway | mode | connections | RSS before | RSS open | RSS after | "
           "KiB/conn (RSS) | KiB/conn (anon) | after vs before | after vs fresh |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for gw, mode, count, r in rows:
        # h2idle: the gateway closed them before the clients did, so count what opened
        n = max(r["opened"] if mode == "h2idle" else r["alive"], 1)
        per = (r["open"][0] - r["before"][0]) / n
        per_anon = (r["open"][1] - r["before"][1]) / n
        back = (r["after"][0] - r["before"][0]) / r["before"][0] * 100
        home = (r["after"][0] - r["fresh"][0]) / r["fresh"][0] * 100
        note = "" if r["alive"] == count else f" ({r['alive']} alive)"
        out.append(f"| {gw} | {mode} | {count}{note} | {r['before'][0] / 1024:.1f} MiB | "
                   f"{r['open'][0] / 1024:.1f} MiB | {r['after'][0] / 1024:.1f} MiB | "
                   f"{per:.1f} | {per_anon:.1f} | {back:+.1f}% | {home:+.1f}% |")
    return "\n".join(out)


def fit(wanted, mode, limit):
    """As many connections as asked, or as one gateway process can hold: each client
    socket is a descriptor there, and a WebSocket also holds one to its upstream (a process
    may hold RLIMIT_NOFILE, which only CAP_SYS_RESOURCE can raise past its hard limit)."""
    room = limit - 500
    if mode == "ws":
        room //= 2
    if wanted > room:
        log(f"{mode}: {wanted} connections need more descriptors than the limit of {limit}; "
            f"measuring {room}")
    return min(wanted, room)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gateway", default="pylon,nginx",
                    help="comma-separated: pylon, nginx, floor (PYLON_BIN, FLOOR_BIN)")
    ap.add_argument("--modes", default="plain,tls,ws")
    ap.add_argument("--counts", default="3000,20000")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds to wait before reading the memory")
    ap.add_argument("--after", type=float, default=8.0,
                    help="seconds after the close before the last reading")
    ap.add_argument("--h2-idle", type=float, default=10.0,
                    help="h2idle mode: Pylon's timeouts.client_idle, seconds")
    ap.add_argument("--out", help="also write the Markdown here")
    ap.add_argument("--ws-upstream", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    limit = raise_nofile()
    if args.ws_upstream:
        asyncio.run(ws_upstream(args.ws_upstream))
        return
    if args.client:
        mode, count, first, prefix = args.client
        asyncio.run(asyncio.wait_for(client_main(mode, int(count), int(first), prefix),
                                     PHASE_TIMEOUT + 600))
        return
    gateways = [g for g in args.gateway.split(",") if g]
    modes = [m for m in args.modes.split(",") if m]
    counts = [int(c) for c in args.counts.split(",") if c]
    per_process = max(1000, min(5000, limit - 500))
    binaries = {"pylon": PYLON, "floor": FLOOR}
    for g in gateways:
        if g not in ("pylon", "nginx", "floor"):
            raise BenchError(f"unknown gateway {g}: pylon, nginx or floor")
        if g in binaries and not os.access(binaries[g], os.X_OK):
            raise BenchError(f"{g}: no binary {binaries[g]} (PYLON_BIN / FLOOR_BIN; "
                             "cargo build --release --bins)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pylon-idle-") as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o755)
        try:
            cert, key = make_certificate(tmp)
            start_upstream(tmp)
            start_ws_upstream(tmp)
            for gw in gateways:
                for mode in modes:
                    for wanted in counts:
                        count = fit(wanted, mode, limit)
                        if mode == "h2idle" and gw != "pylon":
                            log(f"{gw} {mode}: Pylon only")
                            continue
                        log(f"{gw} {mode} {count}")
                        if gw == "nginx":
                            svc = start_nginx(tmp, cert, key)
                        elif gw == "floor":
                            svc = start_floor(tmp, gw, binaries[gw], cert, key, mode)
                        elif mode == "h2idle":
                            svc = start_pylon(tmp, gw, binaries[gw], cert, key,
                                              f"{args.h2_idle:g}s", h2c=True)
                        else:
                            svc = start_pylon(tmp, gw, binaries[gw], cert, key)
                        prefix = "" if gw == "floor" else "/api"
                        h2_idle = args.h2_idle if mode == "h2idle" else None
                        try:
                            r = run_one(svc, mode, count, args.settle, args.after,
                                        per_process, prefix, h2_idle)
                        finally:
                            svc.stop()
                        log(f"  opened {r['opened']} in {r['seconds']:.1f} s; RSS "
                            f"{r['before'][0]} -> {r['open'][0]} -> {r['after'][0]} KiB")
                        rows.append((gw, mode, count, r))
                        # let the closed connections' TIME_WAIT ports go before the next
                        time.sleep(1)
        finally:
            stop_all()
    md = [f"# Memory per idle connection ({time.strftime('%Y-%m-%d %H:%M')})", "",
          f"pylon: `{PYLON}`; floor: `{FLOOR}`; settle {args.settle} s, after-close {args.after} s; "
          f"each connection made one request (a WebSocket: the upgrade), then idle.", "",
          table(rows), ""]
    text = "\n".join(md)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    run(main, "idle_connections")

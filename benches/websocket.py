#!/usr/bin/env python3
"""WebSocket throughput through a gateway: bulk bytes after the 101, both ways, and the
Autobahn|Testsuite's performance cases (9.*), direct and through each gateway (issue 23).

    python3 benches/websocket.py [--gateway direct,pylon,before,nginx] [--mib 512]
                                 [--streams 8] [--rounds 3] [--no-autobahn] [--out FILE]

Gateways, each fresh on loopback, in front of the same upstream:

    direct  no gateway: the client talks to the upstream
    pylon   PYLON_BIN (default target/release/pylon), 2 threads, benches/pylon.toml's
            policy work (idle_connections.py's configuration)
    before  BEFORE_BIN, another Pylon build (the one before a change), the same way
    nginx   benches/peers/nginx.conf with a WebSocket location (idle_connections.py's)

Bulk: an upstream in this file (--bulk-upstream; a thread per connection, plain sockets)
accepts the upgrade, then for .../sink/N reads N bytes and says how many came,
and for .../source/N sends N bytes and closes. Each round moves MIB MiB over one
connection each way ("upload", "download"), then MIB MiB split over STREAMS connections
at once each way ("upload xN", "download xN"); every byte count is checked. A round's
figure is MiB/s over the wall time and the gateway's CPU time (user + system, from
/proc) per GiB; the table shows the median of ROUNDS rounds. Client, upstream and
gateway share this machine's cores, so wall-clock figures are rough; CPU per GiB is the
steadier one.

Autobahn (skipped, saying so, without `wstest` under Python 2.7; see
scripts/ensure-autobahn.sh): its echo server as the upstream and its fuzzing client
running cases 9.* against each gateway; the sum of the cases' durations, and 9.3.1 and
9.4.1 alone (the late close of issue 23), with how many cases passed.

Every process started here is stopped at the end; every phase is bounded in time;
nothing leaves 127.0.0.1.
"""

import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from idle_connections import (  # noqa: E402
    HOST, PLAIN_PORT, PYLON, WS_GUID, WS_PORT, BenchError, Service, log, make_certificate,
    run, start_nginx, start_pylon, stop_all)

BEFORE = os.environ.get("BEFORE_BIN")
CHUNK = 1 << 20
PHASE_TIMEOUT = 300
WSTEST = Path.home() / ".local" / "bin" / "wstest"


# ---------------------------------------------------------------------------------------
# the bulk upstream (run as its own process)


def read_head(sock):
    head = b""
    while b"\r\n\r\n" not in head:
        got = sock.recv(4096)
        if not got:
            raise ConnectionError("closed before the head ended")
        head += got
    end = head.index(b"\r\n\r\n") + 4
    return head[:end], head[end:]


def accept_key(head):
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            return base64.b64encode(
                __import__("hashlib").sha1(value.strip() + WS_GUID).digest())
    return b""


def serve_one(conn):
    with conn:
        head, rest = read_head(conn)
        path = head.split(b" ")[1].decode()
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(head) +
                     b"\r\n\r\n")
        # Pylon strips the route's prefix (/ws), nginx and a direct client do not
        if "/sink/" in path:
            # read the N bytes announced, then say how many came (no half close: not every
            # gateway passes one on)
            want, total, buf = int(path.rsplit("/", 1)[1]), len(rest), bytearray(CHUNK)
            while total < want:
                n = conn.recv_into(buf)
                if n == 0:
                    break
                total += n
            conn.sendall(f"{total}\n".encode())
        elif "/source/" in path:
            left, block = int(path.rsplit("/", 1)[1]), memoryview(b"s" * CHUNK)
            while left > 0:
                n = min(left, CHUNK)
                conn.sendall(block[:n])
                left -= n
        conn.shutdown(socket.SHUT_WR)


def bulk_upstream(port):
    srv = socket.create_server((HOST, port), backlog=256)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve_one, args=(conn,), daemon=True).start()


# ---------------------------------------------------------------------------------------
# the client


def upgrade(port, path):
    sock = socket.create_connection((HOST, port), timeout=PHASE_TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head, rest = read_head(sock)
    if not head.startswith(b"HTTP/1.1 101"):
        raise BenchError(f"{path}: no 101: {head[:200]!r}")
    return sock, rest


def upload(port, size):
    sock, _ = upgrade(port, f"/ws/sink/{size}")
    with sock:
        block, left = memoryview(b"c" * CHUNK), size
        while left > 0:
            n = min(left, CHUNK)
            sock.sendall(block[:n])
            left -= n
        answer = b""
        while not answer.endswith(b"\n"):
            got = sock.recv(64)
            if not got:
                break
            answer += got
    if int(answer or b"-1") != size:
        raise BenchError(f"upload: the upstream got {answer!r} of {size} bytes")


def download(port, size):
    sock, rest = upgrade(port, f"/ws/source/{size}")
    total, buf = len(rest), bytearray(CHUNK)
    with sock:
        while True:
            n = sock.recv_into(buf)
            if n == 0:
                break
            total += n
    if total != size:
        raise BenchError(f"download: {total} of {size} bytes came")


def cpu_seconds(pid):
    """User + system time of a process and its children (nginx's workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    total = 0
    for p in [pid] + [int(k) for k in out.split()]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / ticks


def timed(pid, fn, port, size, streams):
    errors = []

    def one():
        try:
            fn(port, size // streams)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(streams)]
    cpu0, t0 = (cpu_seconds(pid) if pid else 0), time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(PHASE_TIMEOUT)
    wall = time.monotonic() - t0
    cpu = (cpu_seconds(pid) - cpu0) if pid else 0
    if errors or any(t.is_alive() for t in threads):
        raise BenchError(f"{fn.__name__} x{streams}: {errors or 'timed out'}")
    mib = size / (1 << 20)
    return mib / wall, cpu / (mib / 1024)


# ---------------------------------------------------------------------------------------
# Autobahn 9.*


def autobahn(tmp, agents):
    """Cases 9.* against each agent: {agent: (sum of durations in ms, 9.3.1, 9.4.1, passed,
    cases)}."""
    spec = tmp / "autobahn.json"
    out = tmp / "autobahn"
    spec.write_text(json.dumps({
        "outdir": str(out),
        "servers": [{"agent": name, "url": url} for name, url in agents],
        "cases": ["9.*"], "exclude-cases": [], "exclude-agent-cases": {}}))
    env = dict(os.environ, PYENV_VERSION="2.7.18")
    client = subprocess.Popen([WSTEST, "-m", "fuzzingclient", "-s", spec], cwd=tmp, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client.wait(timeout=1200)
    except subprocess.TimeoutExpired:
        client.kill()
        raise BenchError("Autobahn 9.* ran past 20 minutes")
    index = json.loads((out / "index.json").read_text())
    result = {}
    for name, _ in agents:
        cases = index[name]
        ok = sum(1 for c in cases.values() if c["behavior"] in ("OK", "NON-STRICT", "INFORMATIONAL")
                 and c["behaviorClose"] in ("OK", "NON-STRICT", "INFORMATIONAL"))
        result[name] = (sum(c["duration"] for c in cases.values()),
                        cases.get("9.3.1", {}).get("duration"),
                        cases.get("9.4.1", {}).get("duration"), ok, len(cases))
    return result


# ---------------------------------------------------------------------------------------


def start_gateway(tmp, name, cert, key):
    if name == "direct":
        return None, WS_PORT
    if name == "nginx":
        return start_nginx(tmp, cert, key), PLAIN_PORT
    binary = PYLON if name == "pylon" else BEFORE
    return start_pylon(tmp, name, binary, cert, key), PLAIN_PORT


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gateway", default="direct,pylon,before,nginx")
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-autobahn", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--bulk-upstream", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bulk_upstream:
        bulk_upstream(args.bulk_upstream)
        return
    gateways = [g for g in args.gateway.split(",") if g]
    if "before" in gateways and not BEFORE:
        log("before: no BEFORE_BIN, skipped")
        gateways.remove("before")
    size = args.mib << 20
    kinds = [("upload", upload, 1), ("download", download, 1),
             (f"upload x{args.streams}", upload, args.streams),
             (f"download x{args.streams}", download, args.streams)]
    rows = {}
    ab = None
    with tempfile.TemporaryDirectory(prefix="pylon-ws-") as tmp_name:
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o755)
        try:
            cert, key = make_certificate(tmp)
            up = Service("bulk-upstream", [sys.executable, Path(__file__).resolve(),
                                           "--bulk-upstream", WS_PORT], tmp)
            up.wait_port(WS_PORT)
            for gw in gateways:
                svc, port = start_gateway(tmp, gw, cert, key)
                try:
                    for label, fn, streams in kinds:
                        runs = [timed(svc.pid if svc else None, fn, port, size, streams)
                                for _ in range(args.rounds)]
                        rate = statistics.median(r[0] for r in runs)
                        cpu = statistics.median(r[1] for r in runs)
                        log(f"{gw} {label}: {rate:.0f} MiB/s, {cpu:.2f} CPU s/GiB")
                        rows[(gw, label)] = (rate, cpu)
                finally:
                    if svc:
                        svc.stop()
            up.stop()
            if args.no_autobahn:
                log("Autobahn: not asked for")
            elif not WSTEST.exists() or shutil.which("pyenv") is None:
                log("Autobahn: no wstest under Python 2.7 (scripts/ensure-autobahn.sh): skipped")
            else:
                env = dict(os.environ, PYENV_VERSION="2.7.18")
                Service("echo", [WSTEST, "-m", "echoserver", "-w", f"ws://{HOST}:{WS_PORT}"],
                        tmp, env=env).wait_port(WS_PORT)
                ab = {}
                for gw in gateways:
                    # one gateway at a time: they listen on the same port
                    svc, port = start_gateway(tmp, gw, cert, key)
                    try:
                        ab.update(autobahn(tmp, [(gw, f"ws://{HOST}:{port}/ws/")]))
                    finally:
                        if svc:
                            svc.stop()
                    log(f"{gw} Autobahn 9.*: {ab[gw][0]:,} ms in all")
        finally:
            stop_all()
    md = [f"# WebSocket throughput ({time.strftime('%Y-%m-%d %H:%M')})", "",
          f"pylon: `{PYLON}`; before: `{BEFORE or '-'}`; {args.mib} MiB per run, "
          f"median of {args.rounds} rounds; MiB/s over wall time, and the gateway's CPU "
          "seconds per GiB moved.", "",
          "| gateway | " + " | ".join(label for label, _, _ in kinds) + " |",
          "|---|" + "---:|" * len(kinds)]
    for gw in gateways:
        cells = []
        for label, _, _ in kinds:
            rate, cpu = rows[(gw, label)]
            cells.append(f"{rate:,.0f} MiB/s" + ("" if gw == "direct" else f", {cpu:.2f} s/GiB"))
        md.append(f"| {gw} | " + " | ".join(cells) + " |")
    if ab:
        md += ["", "Autobahn|Testsuite cases 9.* (durations in ms, as the fuzzing client "
               "reports them):", "",
               "| gateway | cases passed | sum of 9.* | 9.3.1 | 9.4.1 |", "|---|---:|---:|---:|---:|"]
        for gw in gateways:
            total, c931, c941, ok, n = ab[gw]
            md.append(f"| {gw} | {ok} of {n} | {total:,} | {c931} | {c941} |")
    text = "\n".join(md) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    run(main, "websocket")

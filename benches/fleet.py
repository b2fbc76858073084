#!/usr/bin/env python3
"""A fleet of gateways: how long from a PUT /config on one node to the last node serving it.

    python3 benches/fleet.py [--changes 20] [--gateways 3] [--out benches/results/fleet.md]
    PYLON_BIN=/path/to/pylon python3 benches/fleet.py

`make bench` runs this. It starts a redis-server (127.0.0.1:18379), an upstream (a small
Python HTTP server on 127.0.0.1:18380) and N Pylon gateways (threads = 1, on
127.0.0.1:18381..., admin listeners on 18391...) in one fleet. Then, --changes times, it
PUTs a new policy document on one node (node i mod N: each node takes writes in turn), the
document adding one route /rK, and polls every node for /rK/x over one keep-alive
connection each, in turn, until all answer 200. Reported: the time from sending the PUT to
the PUT's answer, and to the last node's first 200 (p50 and max over the changes), with the
binary and the date, in --out (printed too). Targets are shown, not enforced: the issue's
is 1 s to the last node. Everything is stopped at the end; nothing leaves 127.0.0.1.
"""

import argparse
import datetime
import http.client
import http.server
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import describe_binary, stop_gateways, wait_port  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PYLON = Path(os.environ.get("PYLON_BIN") or REPO / "target" / "release" / "pylon")
HOST = "127.0.0.1"
REDIS_PORT = 18379
UPSTREAM_PORT = 18380
FIRST_GATEWAY = 18381
FIRST_ADMIN = 18391
WRITE = "bench-write-token-0123456789"


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args):
        pass


def node_config(tmp, i):
    text = f"""[server]
listen = ["{HOST}:{FIRST_GATEWAY + i}"]
threads = 1
pid_file = "{tmp}/pylon{i}.pid"
upgrade_sock = "{tmp}/pylon{i}.sock"
[access_log]
path = "off"
[admin]
listen = "{HOST}:{FIRST_ADMIN + i}"
write_token_env = "BENCH_WRITE"
[control]
store = "redis://{HOST}:{REDIS_PORT}/0"
fleet = "bench"
node = "n{i}"
"""
    path = Path(tmp) / f"pylon{i}.toml"
    path.write_text(text)
    return path


def document(k):
    """The policy document of change k: routes /r1 ... /rk."""
    return "".join(
        f'[[routes]]\nprefix = "/r{j}"\nupstreams = ["{HOST}:{UPSTREAM_PORT}"]\n' for j in range(1, k + 1)
    )


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    reply = conn.getresponse()
    data = reply.read()
    return reply.status, reply.msg, data


def run(args):
    tmp = tempfile.mkdtemp(prefix="pylon-fleet-")
    redis = subprocess.Popen(
        ["redis-server", "--port", str(REDIS_PORT), "--bind", HOST, "--save", "", "--appendonly", "no",
         "--dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    upstream = http.server.ThreadingHTTPServer((HOST, UPSTREAM_PORT), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    procs = []
    try:
        if not wait_port(REDIS_PORT):
            sys.exit("redis-server did not start")
        for i in range(args.gateways):
            procs.append(subprocess.Popen(
                [str(PYLON), "-c", str(node_config(tmp, i))],
                stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / f"err{i}.log", "w"),
                env={**os.environ, "RUST_LOG": "warn", "BENCH_WRITE": WRITE},
            ))
        for i in range(args.gateways):
            if not wait_port(FIRST_GATEWAY + i) or not wait_port(FIRST_ADMIN + i):
                sys.exit(f"gateway {i} did not start: {(Path(tmp) / f'err{i}.log').read_text()}")
        admins = [http.client.HTTPConnection(HOST, FIRST_ADMIN + i, timeout=5) for i in range(args.gateways)]
        nodes = [http.client.HTTPConnection(HOST, FIRST_GATEWAY + i, timeout=5) for i in range(args.gateways)]
        _, headers, _ = request(admins[0], "GET", "/config")
        etag = headers["ETag"]
        put_times, last_times = [], []
        for k in range(1, args.changes + 1):
            writer = admins[(k - 1) % args.gateways]
            started = time.perf_counter()
            status, headers, body = request(
                writer, "PUT", "/config", body=document(k).encode(),
                headers={"Authorization": f"Bearer {WRITE}", "If-Match": etag},
            )
            answered = time.perf_counter()
            if status != 200:
                sys.exit(f"PUT {k}: {status} {body.decode(errors='replace')}")
            etag = headers["ETag"]
            waiting = set(range(args.gateways))
            deadline = started + 10
            while waiting and time.perf_counter() < deadline:
                for i in sorted(waiting):
                    if request(nodes[i], "GET", f"/r{k}/x")[0] == 200:
                        waiting.discard(i)
            done = time.perf_counter()
            if waiting:
                sys.exit(f"change {k}: nodes {sorted(waiting)} did not serve /r{k} within 10 s")
            put_times.append(answered - started)
            last_times.append(done - started)
            time.sleep(0.2)
        status, _, body = request(admins[-1], "GET", "/api/fleet")
        fleet = json.loads(body)
        return put_times, last_times, fleet
    finally:
        stop_gateways(procs)
        upstream.shutdown()
        redis.send_signal(signal.SIGTERM)
        redis.wait(timeout=10)


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--gateways", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benches" / "results" / "fleet.md"))
    args = parser.parse_args()
    if not PYLON.exists():
        sys.exit(f"{PYLON} is missing: cargo build --release --bins (or set PYLON_BIN)")
    put_times, last_times, fleet = run(args)
    agree = fleet.get("agree")
    report = f"""# A fleet: PUT /config to the last node serving

{datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}, {describe_binary()}.
`python3 benches/fleet.py --changes {args.changes} --gateways {args.gateways}`: {args.gateways} gateways
(threads = 1) in one fleet on a local redis-server; each change PUTs a document with one
more route on one node (the nodes take writes in turn), then every node is polled until it
serves the new route.

| | p50 | max | target |
|---|---|---|---|
| PUT answered (checked, stored, applied on that node) | {ms(statistics.median(put_times))} | {ms(max(put_times))} | |
| last of {args.gateways} nodes serving the new route | {ms(statistics.median(last_times))} | {ms(max(last_times))} | 1 s: {"met" if max(last_times) <= 1 else "missed"} |

After the last change /api/fleet says agree = {str(agree).lower()}, document version {fleet.get("document", {}).get("version")}.
"""
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()

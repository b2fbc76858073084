#!/usr/bin/env python3
"""Several gateways, one budget: Pylon's rate limits counted locally and in Redis.

    python3 benches/cluster.py [--duration S] [--gateways N] [--connections C] [--out DIR]

`make bench` runs this after benches/load.py. For each mode it starts an nginx upstream
(127.0.0.1:18280), a redis-server (127.0.0.1:18279) and N Pylon gateways (threads = 1 each,
full policy, on 127.0.0.1:18281...), then wrk drives every gateway at once (C connections
each) for S seconds:

    local     every gateway counts in its own process (the default)
    sync50    counts shared through Redis, synced every 50 ms
    sync0     every request asks Redis (sync = "0s")

All requests come from 127.0.0.1, so they all count one key: the hottest case for the
store. The budget never runs out (every request gets 200). Reported: requests per second
in all, CPU time of the gateways per request, and Redis commands per request (from INFO
commandstats). Results: benches/results/cluster.md (printed too). Everything is stopped at
the end; nothing leaves 127.0.0.1.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYLON = Path(os.environ.get("PYLON_BIN") or REPO / "target" / "release" / "pylon")
HOST = "127.0.0.1"
UPSTREAM_PORT = 18280
REDIS_PORT = 18279
FIRST_GATEWAY = 18281
TICKS = os.sysconf("SC_CLK_TCK")


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def redis_command(command):
    with socket.create_connection((HOST, REDIS_PORT), timeout=2) as s:
        s.sendall(command.encode() + b"\r\n")
        data = b""
        s.settimeout(0.5)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if data.endswith(b"\r\n") and (not data.startswith(b"$") or data.count(b"\r\n") >= 2):
                    break
        except socket.timeout:
            pass
    return data.decode(errors="replace")


def redis_script_calls():
    stats = redis_command("INFO commandstats")
    return sum(
        int(m.group(1))
        for m in re.finditer(r"cmdstat_(?:evalsha|eval|ping):calls=(\d+)", stats)
    )


def gateway_config(tmp, i, mode):
    port = FIRST_GATEWAY + i
    store = ""
    if mode != "local":
        sync = "50ms" if mode == "sync50" else "0s"
        store = f'store = "redis://{HOST}:{REDIS_PORT}/0"\nsync = "{sync}"\n'
    text = f"""[server]
listen = ["{HOST}:{port}"]
threads = 1
pid_file = "{tmp}/pylon{i}.pid"
upgrade_sock = "{tmp}/pylon{i}.sock"
[access_log]
path = "{tmp}/access{i}.log"
[rate_limit]
requests = 1000000000
window = "1m"
{store}
[[routes]]
prefix = "/api"
upstreams = ["{HOST}:{UPSTREAM_PORT}"]
"""
    path = Path(tmp) / f"pylon{i}.toml"
    path.write_text(text)
    return path, port


def run_mode(tmp, mode, gateways, connections, duration):
    procs = []
    try:
        ports = []
        for i in range(gateways):
            conf, port = gateway_config(tmp, i, mode)
            log = open(Path(tmp) / f"pylon{i}.{mode}.err", "w")
            procs.append(
                subprocess.Popen(
                    [str(PYLON), "-c", str(conf)],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env={**os.environ, "RUST_LOG": "warn"},
                )
            )
            ports.append(port)
        for port in ports:
            if not wait_port(port):
                raise RuntimeError(f"gateway on {port} did not start")
        time.sleep(0.5)
        calls_before = redis_script_calls()
        cpu_before = [cpu_seconds(p.pid) for p in procs]
        wrks = [
            subprocess.Popen(
                ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"http://{HOST}:{port}/api/small"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for port in ports
        ]
        outputs = [w.communicate(timeout=duration + 30)[0] for w in wrks]
        cpu = sum(cpu_seconds(p.pid) - b for p, b in zip(procs, cpu_before))
        calls = redis_script_calls() - calls_before
        requests = 0
        errors = 0
        for out in outputs:
            m = re.search(r"(\d+) requests in", out)
            requests += int(m.group(1)) if m else 0
            m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            errors += int(m.group(1)) if m else 0
        return {
            "mode": mode,
            "rps": requests / duration,
            "requests": requests,
            "errors": errors,
            "cpu_us": cpu / max(requests, 1) * 1e6,
            "calls_per_request": calls / max(requests, 1),
        }
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--gateways", type=int, default=3)
    ap.add_argument("--connections", type=int, default=30)
    ap.add_argument("--out", default=str(REPO / "benches" / "results"))
    args = ap.parse_args()
    for tool in ("wrk", "nginx", "redis-server"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"cluster.py needs {tool} (make bench-deps installs it)")
    if not PYLON.exists():
        sys.exit(f"build first: {PYLON} is missing")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    tmp = tempfile.mkdtemp(prefix="pylon-cluster-")
    upstream = redis = None
    try:
        (Path(tmp) / "up.conf").write_text(
            f"""worker_processes 1;
pid {tmp}/up.pid;
error_log {tmp}/up.err;
daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  server {{
    listen {HOST}:{UPSTREAM_PORT};
    keepalive_requests 1000000;
    location / {{ return 200 "hello, world\\n"; }}
  }}
}}
"""
        )
        upstream = subprocess.Popen([nginx, "-p", tmp, "-c", f"{tmp}/up.conf"], stderr=subprocess.DEVNULL)
        redis = subprocess.Popen(
            ["redis-server", "--port", str(REDIS_PORT), "--bind", HOST, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        if not (wait_port(UPSTREAM_PORT) and wait_port(REDIS_PORT)):
            sys.exit("the upstream or redis-server did not start")
        results = [
            run_mode(tmp, mode, args.gateways, args.connections, args.duration)
            for mode in ("local", "sync50", "sync0")
        ]
    finally:
        for p in (upstream, redis):
            if p:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    base = results[0]
    lines = [
        f"## Several gateways, one budget ({args.gateways} gateways, threads = 1 each, "
        f"{args.connections} wrk connections each, {args.duration} s, one client key)",
        "",
        "| counts | requests/s in all | vs local | CPU per request | vs local | Redis commands per request | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"local": "in each process", "sync50": 'Redis, sync = "50ms"', "sync0": 'Redis, sync = "0s"'}
    for r in results:
        lines.append(
            f"| {names[r['mode']]} | {r['rps']:,.0f} | {r['rps'] / base['rps']:.2f}× "
            f"| {r['cpu_us']:.1f} µs | {r['cpu_us'] / base['cpu_us']:.2f}× "
            f"| {r['calls_per_request']:.4f} | {r['errors']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cluster.md").write_text(text)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Slow clients against Pylon: how fast they are cut, what they cost, what others notice.

    python3 benches/slowloris.py [--clients 5000] [--header-timeout 10] [--interval 10]
                                 [--gateway pylon|nginx]

Starts an nginx upstream and target/release/pylon (PYLON_BIN overrides) on loopback, then:
1. a baseline: wrk, 50 connections for 8 s, and its p99;
2. CLIENTS connections that each send a request head one byte at a time, a byte every
   INTERVAL s (default 10; with 2, no single read waits long and only a deadline on the
   whole head can cut them);
3. the same wrk run while they are open, and its p99;
4. when each slow connection was closed (after its accept), and Pylon's RSS before,
   at the peak and after.
Everything runs on 127.0.0.1 and stops by itself.
"""

import argparse
import asyncio
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYLON = Path(os.environ.get("PYLON_BIN") or REPO / "target" / "release" / "pylon")
UP_PORT, GW_PORT = 18290, 18291


def family(pid):
    """The process and its children (nginx's workers)."""
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [int(k) for k in kids]


def rss_mib(pid):
    total = 0.0
    for p in family(pid):
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total


def cpu_seconds(pid):
    total = 0.0
    for p in family(pid):
        fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wrk_p99(seconds):
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", "50", "-d", f"{seconds}s", "--latency",
         f"http://127.0.0.1:{GW_PORT}/api/x"],
        capture_output=True, text=True, check=True).stdout
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return float(p99.group(1)) * scale, float(rps.group(1))


async def slow_client(head, opened, closed, i, interval):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", GW_PORT)
    except OSError:
        closed[i] = None
        return
    opened[i] = time.monotonic()
    got = b""
    for b in head:
        try:
            writer.write(bytes([b]))
            await writer.drain()
            chunk = await asyncio.wait_for(reader.read(4096), timeout=interval)
            if not chunk:
                break
            got += chunk
            break
        except asyncio.TimeoutError:
            continue
        except OSError:
            break
    try:
        rest = await asyncio.wait_for(reader.read(), timeout=60)
        got += rest
    except (asyncio.TimeoutError, OSError):
        pass
    closed[i] = (time.monotonic(), got[:12])
    writer.close()


async def attack(clients, interval):
    head = b"GET /api/x HTTP/1.1\r\nHost: a\r\nX-Padding: " + b"a" * 200
    opened, closed = [None] * clients, [None] * clients
    tasks = []
    for i in range(clients):
        tasks.append(asyncio.create_task(slow_client(head, opened, closed, i, interval)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    return tasks, opened, closed


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=5000)
    p.add_argument("--header-timeout", type=int, default=10)
    p.add_argument("--interval", type=float, default=10.0,
                   help="seconds between two bytes of one slow client")
    p.add_argument("--gateway", choices=["pylon", "nginx"], default="pylon",
                   help="nginx: the same attack on nginx as the gateway, for comparison")
    args = p.parse_args()
    for cmd in ("nginx", "wrk"):
        if not shutil.which(cmd):
            sys.exit(f"slowloris.py needs {cmd}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    tmp = Path(tempfile.mkdtemp())
    (tmp / "up.conf").write_text(f"""
worker_processes 1; pid {tmp}/up.pid; error_log {tmp}/up.err; daemon on;
events {{ worker_connections 1024; }}
http {{ access_log off; server {{ listen 127.0.0.1:{UP_PORT}; keepalive_requests 1000000;
  location / {{ return 200 "hello, world\\n"; }} }} }}
""")
    (tmp / "pylon.toml").write_text(f"""
[server]
listen = ["127.0.0.1:{GW_PORT}"]
threads = 2
pid_file = "{tmp}/pylon.pid"
upgrade_sock = "{tmp}/pylon.sock"
max_connections = {args.clients * 2}
[timeouts]
client_header = "{args.header_timeout}s"
[access_log]
path = "off"
[[routes]]
prefix = "/api"
upstreams = ["127.0.0.1:{UP_PORT}"]
""")
    (tmp / "gw.conf").write_text(f"""
worker_processes 2; pid {tmp}/gw.pid; error_log {tmp}/gw.err; daemon off;
worker_rlimit_nofile 65536;
events {{ worker_connections {args.clients * 2}; }}
http {{ access_log off; client_header_timeout {args.header_timeout}s;
  upstream up {{ server 127.0.0.1:{UP_PORT}; keepalive 64; }}
  server {{ listen 127.0.0.1:{GW_PORT}; keepalive_requests 1000000;
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
    subprocess.run(["nginx", "-c", str(tmp / "up.conf")], check=True)
    if args.gateway == "nginx":
        command = ["nginx", "-c", str(tmp / "gw.conf")]
    else:
        command = [str(PYLON), "-c", str(tmp / "pylon.toml")]
    gw = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(tmp / "gw.log", "w"),
                          env={**os.environ, "RUST_LOG": "error"})
    try:
        for _ in range(100):
            if subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{GW_PORT}/"]).returncode == 0:
                break
            time.sleep(0.1)
        idle = rss_mib(gw.pid)
        base_p99, base_rps = wrk_p99(8)
        settled = rss_mib(gw.pid)

        async def run():
            tasks, opened, closed = await attack(args.clients, args.interval)
            # CPU over 4 s of attack alone: Pylon's and this attacker's own
            cpu0, own0 = cpu_seconds(gw.pid), time.process_time()
            await asyncio.sleep(4)
            cpu.append((cpu_seconds(gw.pid) - cpu0) / 4)
            cpu.append((time.process_time() - own0) / 4)
            peak = rss_mib(gw.pid)
            loop = asyncio.get_running_loop()
            during = await loop.run_in_executor(None, wrk_p99, 4)
            peak = max(peak, rss_mib(gw.pid))
            await asyncio.gather(*tasks)
            return opened, closed, during, peak

        cpu = []
        opened, closed, (p99, rps), peak = asyncio.run(run())
        time.sleep(2)
        after = rss_mib(gw.pid)
        # the allocator gives memory back as the threads that freed it allocate again
        wrk_p99(2)
        time.sleep(5)
        later = rss_mib(gw.pid)
        held = [c[0] - o for o, c in zip(opened, closed) if o and c]
        answered = sum(1 for c in closed if c and c[1].startswith(b"HTTP/1.1 408"))
        print(f"gateway: {args.gateway}")
        print(f"slow clients: {args.clients}, connected {len(held)}, answered 408: {answered}")
        print(f"held open: min {min(held):.2f} s, max {max(held):.2f} s "
              f"(client_header = {args.header_timeout} s)")
        print(f"normal client p99: {base_p99:.2f} ms alone, {p99:.2f} ms during the attack "
              f"({rps:.0f} against {base_rps:.0f} req/s)")
        print(f"CPU while only the slow clients are there: the gateway {cpu[0] * 100:.1f}% of a core, "
              f"the attacker itself {cpu[1] * 100:.1f}%")
        print(f"RSS: {idle:.1f} MiB idle, {settled:.1f} after the baseline run, "
              f"{peak:.1f} at the peak, {after:.1f} 2 s after, {later:.1f} after more traffic")
    finally:
        gw.terminate()
        try:
            gw.wait(timeout=10)
        except subprocess.TimeoutExpired:
            gw.kill()
        subprocess.run(["nginx", "-c", str(tmp / "up.conf"), "-s", "stop"], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

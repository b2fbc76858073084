#!/usr/bin/env python3
"""What a refused huge upload costs Pylon: a 1 GiB upload to a route with max_body = "1m".

    python3 benches/upload_limit.py [--size-mib 1024] [--chunked]

Starts target/release/pylon (PYLON_BIN overrides) on loopback in front of an nginx
upstream, sends the upload (with Content-Length, or chunked with --chunked) as fast as the
socket takes it, and reports how long the 413 took, how much of the body Pylon let in
before closing, and Pylon's RSS before and after. Bounded: one upload, 60 s at most.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYLON = Path(os.environ.get("PYLON_BIN") or REPO / "target" / "release" / "pylon")
UP_PORT, GW_PORT = 18390, 18391


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--chunked", action="store_true")
    args = p.parse_args()
    if not shutil.which("nginx"):
        sys.exit("upload_limit.py needs nginx")
    tmp = Path(tempfile.mkdtemp())
    (tmp / "up.conf").write_text(f"""
worker_processes 1; pid {tmp}/up.pid; error_log {tmp}/up.err; daemon on;
events {{ worker_connections 64; }}
http {{ access_log off; client_max_body_size 0;
  server {{ listen 127.0.0.1:{UP_PORT}; location / {{ return 200 "ok\\n"; }} }} }}
""")
    (tmp / "pylon.toml").write_text(f"""
[server]
listen = ["127.0.0.1:{GW_PORT}"]
threads = 2
pid_file = "{tmp}/pylon.pid"
upgrade_sock = "{tmp}/pylon.sock"
[access_log]
path = "off"
[[routes]]
prefix = "/upload"
upstreams = ["127.0.0.1:{UP_PORT}"]
max_body = "1m"
""")
    subprocess.run(["nginx", "-c", str(tmp / "up.conf")], check=True)
    gw = subprocess.Popen([str(PYLON), "-c", str(tmp / "pylon.toml")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", GW_PORT), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        before = rss_mib(gw.pid)
        size = args.size_mib << 20
        s = socket.create_connection(("127.0.0.1", GW_PORT))
        s.settimeout(60)
        framing = ("Transfer-Encoding: chunked" if args.chunked
                   else f"Content-Length: {size}")
        start = time.monotonic()
        s.sendall(f"POST /upload/x HTTP/1.1\r\nHost: a\r\n{framing}\r\n\r\n".encode())
        sent = [0]

        def pump():
            block = b"x" * (1 << 16)
            if args.chunked:
                block = b"10000\r\n" + block + b"\r\n"
            try:
                while sent[0] < size:
                    sent[0] += s.send(block)
            except OSError:
                pass

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        answer = s.recv(4096)
        took = (time.monotonic() - start) * 1000
        t.join(timeout=30)
        after = rss_mib(gw.pid)
        status = answer.split(b" ", 2)[1].decode() if answer else "none"
        print(f"{'chunked' if args.chunked else 'Content-Length'} upload of {args.size_mib} MiB "
              f"to max_body = 1m: answer {status} after {took:.1f} ms; "
              f"{sent[0] / 2**20:.1f} MiB sent before the gateway closed")
        print(f"Pylon RSS: {before:.1f} MiB before, {after:.1f} MiB after "
              f"({after - before:+.1f} MiB)")
    finally:
        gw.terminate()
        gw.wait(timeout=10)
        subprocess.run(["nginx", "-c", str(tmp / "up.conf"), "-s", "stop"], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

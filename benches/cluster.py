#!/usr/bin/env python3
"""Several gateways, one budget: Pylon's rate limits counted locally and in Redis.

    python3 benches/cluster.py [--modes local,sync50,sync0,clients] [--duration S]
        [--gateways N] [--connections C] [--sizes 1000,10000,100000] [--out DIR]
    PYLON_BIN=/path/to/pylon python3 benches/cluster.py --modes clients

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

    clients   many clients: the gateways trust 127.0.0.1 (`server.trusted_proxies`) and
              read the client from X-Forwarded-For; policy 1,000 requests per one-hour
              window, counted in Redis with sync = "50ms"

For each size in --sizes (1,000, 10,000 and 100,000 clients) the gateways and Redis start
empty and one wrk per gateway (benches/clients.lua) sends, for --clients-duration seconds,
a crowd (client i = request index mod N, 10.a.b.c, dealt round-robin over the gateways, so
N requests reach every client once) with one hot client (172.16.0.1) mixed in: every
--hot-every-th request on every connection. The traffic's counts are read one second
after wrk ends (the gateways' last syncs push what was counted just before), then --idle
seconds follow with the gateways still running and no traffic. Reported, under traffic and after it: Redis commands per second
(every command in INFO commandstats, those run inside scripts included, the bench's own
INFO/CONFIG/FLUSHALL/DBSIZE left out; CONFIG RESETSTAT starts each phase) and Redis CPU
(/proc/PID/stat, % of one core); under traffic, Redis commands per request and the
gateways' CPU per request; the hot client's 200s (from the access logs) against its budget
of 1,000. Then the repeat case: one client (172.16.0.2) at --repeat-rate requests a second
for --repeat-seconds, dealt round-robin over the gateways at a fixed pace by a small
asyncio client, and its Redis commands per request. Results:
benches/results/cluster-clients.md (--clients-file), with the binary (PYLON_BIN, default
target/release/pylon) and the date. Targets are shown, not enforced.
"""

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYLON = Path(os.environ.get("PYLON_BIN") or REPO / "target" / "release" / "pylon")
HOST = "127.0.0.1"
UPSTREAM_PORT = 18280
REDIS_PORT = 18279
FIRST_GATEWAY = 18281
FIRST_ADMIN = 18291
HOT_CLIENT = "172.16.0.1"
REPEAT_CLIENT = "172.16.0.2"
BUDGET = 1000
# the bench's own commands, left out of the counts
OWN_COMMANDS = {"info", "config", "flushall", "dbsize"}
TICKS = os.sysconf("SC_CLK_TCK")
# clients mode: seconds after wrk ends before the traffic's Redis counts are read
SETTLE = 1.0


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
    """Every command Redis ran (those inside scripts included), the bench's own left out."""
    stats = redis_command("INFO commandstats")
    return sum(
        int(m.group(2))
        for m in re.finditer(r"cmdstat_([^:]+):calls=(\d+)", stats)
        if m.group(1) not in ("info", "config", "flushall", "dbsize")
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


def spawn_gateway(conf, err_path):
    """One gateway on its config, its warnings and errors to err_path."""
    return subprocess.Popen(
        [str(PYLON), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=open(err_path, "w"),
        env={**os.environ, "RUST_LOG": "warn"},
    )


def run_mode(tmp, mode, gateways, connections, duration):
    procs = []
    try:
        ports = []
        for i in range(gateways):
            conf, port = gateway_config(tmp, i, mode)
            procs.append(spawn_gateway(conf, Path(tmp) / f"pylon{i}.{mode}.err"))
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
        stop_gateways(procs)


# ---------------------------------------------------------------------------------------
# many clients


class Redis:
    """A minimal RESP client for the bench's own INFO / CONFIG / FLUSHALL."""

    def __init__(self, timeout=10.0):
        self.sock = socket.create_connection((HOST, REDIS_PORT), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(f"redis: {rest.decode()}")
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self._exactly(n + 2)[:-2]
            return data.decode(errors="replace")
        if kind == b"*":
            return [self._reply() for _ in range(max(int(rest), 0))]
        raise RuntimeError(f"redis: cannot read {line!r}")

    def call(self, *args):
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = str(a).encode()
            out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
        self.sock.sendall(b"".join(out))
        return self._reply()

    def commandstats(self):
        """Calls per command since the last CONFIG RESETSTAT, the bench's own left out."""
        stats = {}
        for m in re.finditer(r"^cmdstat_([^:]+):calls=(\d+)", self.call("INFO", "commandstats"), re.M):
            name = m.group(1)
            if name.split("|")[0] not in OWN_COMMANDS:
                stats[name] = stats.get(name, 0) + int(m.group(2))
        return stats


def describe_binary():
    """Which binary runs: its path, version, build time, a hash prefix and, when it sits in
    a git work tree (e.g. target/release/pylon), that tree's git describe."""
    parts = [f"`{PYLON}`"]
    try:
        v = subprocess.run([str(PYLON), "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
        if v:
            parts.append(v)
    except (OSError, subprocess.TimeoutExpired):
        pass
    st = PYLON.stat()
    parts.append("built " + datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    h = hashlib.sha256()
    with open(PYLON, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    parts.append("sha256 " + h.hexdigest()[:12])
    for parent in PYLON.resolve().parents:
        if (parent / ".git").exists():
            d = subprocess.run(
                ["git", "-C", str(parent), "describe", "--always", "--dirty", "--tags"],
                capture_output=True, text=True,
            ).stdout.strip()
            if d:
                parts.append(f"git describe of {parent}: {d} (the tree now, not necessarily the build)")
            break
    return ", ".join(parts)


def clients_config(tmp, i, tag):
    port = FIRST_GATEWAY + i
    admin = FIRST_ADMIN + i
    text = f"""[server]
listen = ["{HOST}:{port}"]
threads = 1
pid_file = "{tmp}/pylon{i}.pid"
upgrade_sock = "{tmp}/pylon{i}.sock"
trusted_proxies = ["{HOST}"]
[admin]
listen = "{HOST}:{admin}"
[access_log]
path = "{tmp}/access{i}.{tag}.log"
[rate_limit]
requests = {BUDGET}
window = "1h"
store = "redis://{HOST}:{REDIS_PORT}/0"
sync = "50ms"
[[routes]]
prefix = "/api"
upstreams = ["{HOST}:{UPSTREAM_PORT}"]
"""
    path = Path(tmp) / f"pylon{i}.{tag}.toml"
    path.write_text(text)
    return path, port, admin


def start_gateways(tmp, gateways, tag):
    procs, ports, admins = [], [], []
    try:
        for i in range(gateways):
            conf, port, admin = clients_config(tmp, i, tag)
            procs.append(spawn_gateway(conf, Path(tmp) / f"pylon{i}.{tag}.err"))
            ports.append(port)
            admins.append(admin)
        for port in ports + admins:
            if not wait_port(port):
                raise RuntimeError(f"gateway port {port} did not open (see {tmp}/pylon*.{tag}.err)")
    except BaseException:
        stop_gateways(procs)
        raise
    time.sleep(0.5)
    return procs, ports, admins


def stop_gateways(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def store_status(admins):
    """rate_limit.store and .clients from each gateway's /api/status."""
    out = []
    for admin in admins:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{admin}/api/status", timeout=3) as r:
                doc = json.load(r)
            rl = doc.get("rate_limit") or {}
            st = rl.get("store") or {}
            out.append({"state": st.get("state"), "up": st.get("up"), "calls": st.get("calls"),
                        "last_error": st.get("last_error"), "clients": rl.get("clients")})
        except (OSError, ValueError) as e:
            out.append({"state": f"status unreadable: {e}", "up": None, "calls": None,
                        "last_error": None, "clients": None})
    return out


def parse_wrk_counts(out):
    m = re.search(r"(\d+) requests in", out)
    requests = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(x) for x in m.groups()) if m else 0
    return requests, non2xx, socket_errors


def access_log_dropped(admins):
    """pylon_access_log_dropped_total summed over the gateways (None: unreadable)."""
    total = 0
    for admin in admins:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{admin}/metrics", timeout=3) as r:
                text = r.read().decode(errors="replace")
        except OSError:
            return None
        m = re.search(r"^pylon_access_log_dropped_total(?:\{[^}]*\})? (\d+)", text, re.M)
        total += int(m.group(1)) if m else 0
    return total


def read_access_logs(tmp, gateways, tag):
    """From the gateways' access logs: distinct crowd clients (10.*) that got a 200, the
    crowd's other answers by status, the hot client's answers by status."""
    crowd_ok = set()
    crowd_other = {}
    hot = {}
    lines = 0
    for i in range(gateways):
        path = Path(tmp) / f"access{i}.{tag}.log"
        if not path.exists():
            continue
        with open(path, errors="replace") as f:
            for line in f:
                lines += 1
                ip = line.split(" ", 1)[0]
                q = line.split('"')
                status = q[2].split()[0] if len(q) > 2 and q[2].split() else "?"
                if ip == HOT_CLIENT:
                    hot[status] = hot.get(status, 0) + 1
                elif ip.startswith("10."):
                    if status == "200":
                        crowd_ok.add(ip)
                    else:
                        crowd_other[status] = crowd_other.get(status, 0) + 1
        path.unlink()
    return {"crowd_clients_ok": len(crowd_ok), "crowd_other": crowd_other, "hot": hot, "log_lines": lines}


def run_clients_size(tmp, redis, redis_pid, size, duration, args):
    tag = f"c{size}"
    redis.call("FLUSHALL")
    procs, ports, admins = start_gateways(tmp, args.gateways, tag)
    try:
        g = args.gateways
        redis.call("CONFIG", "RESETSTAT")
        redis_cpu0 = cpu_seconds(redis_pid)
        gw_cpu0 = [cpu_seconds(p.pid) for p in procs]
        t0 = time.monotonic()
        wrks = [
            subprocess.Popen(
                ["wrk", "-t1", f"-c{args.crowd_connections}", f"-d{duration}s",
                 "-s", str(REPO / "benches" / "clients.lua"),
                 f"http://{HOST}:{port}/api/small", "--",
                 str(size), str(k), str(g), str(args.hot_every), HOT_CLIENT],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for k, port in enumerate(ports)
        ]
        outputs = [w.communicate(timeout=duration + 60)[0] for w in wrks]
        t1 = time.monotonic()
        # the gateways' last syncs push what was counted just before the end: that is
        # the traffic's cost, so its counts are read a settle time after wrk stops
        time.sleep(SETTLE)
        gw_cpu = sum(cpu_seconds(p.pid) - c for p, c in zip(procs, gw_cpu0))
        redis_cpu = cpu_seconds(redis_pid) - redis_cpu0
        traffic_stats = redis.commandstats()
        status_traffic = store_status(admins)

        # no traffic, every gateway still running
        redis.call("CONFIG", "RESETSTAT")
        redis_cpu1 = cpu_seconds(redis_pid)
        gw_cpu1 = [cpu_seconds(p.pid) for p in procs]
        t2 = time.monotonic()
        time.sleep(args.idle)
        idle_stats = redis.commandstats()
        t3 = time.monotonic()
        redis_idle_cpu = cpu_seconds(redis_pid) - redis_cpu1
        gw_idle_cpu = sum(cpu_seconds(p.pid) - c for p, c in zip(procs, gw_cpu1))
        status_idle = store_status(admins)
        dropped = access_log_dropped(admins)
        dead = [i for i, p in enumerate(procs) if p.poll() is not None]
    finally:
        stop_gateways(procs)
    keys = int(redis.call("DBSIZE"))
    logs = read_access_logs(tmp, args.gateways, tag)

    requests = non2xx = socket_errors = 0
    per_gateway = []
    for out in outputs:
        r, n, e = parse_wrk_counts(out)
        requests += r
        non2xx += n
        socket_errors += e
        per_gateway.append(r)
    hot_requests = sum(logs["hot"].values())
    hot_ok = logs["hot"].get("200", 0)
    crowd_requests = requests - sum(v for k, v in logs["hot"].items() if k != "0")
    # the slowest gateway's crowd requests decide whether every client was reached
    slowest = min(per_gateway) * (1 - 1 / args.hot_every if args.hot_every > 0 else 1)
    traffic_s = t1 - t0
    idle_s = t3 - t2
    traffic_commands = sum(traffic_stats.values())
    idle_commands = sum(idle_stats.values())
    return {
        "size": size,
        "duration": duration,
        "traffic_s": traffic_s,
        "idle_s": idle_s,
        "requests": requests,
        "rps": requests / traffic_s,
        "per_gateway": per_gateway,
        "rounds": crowd_requests / size,
        "rounds_slowest": slowest * args.gateways / size,
        "non2xx": non2xx,
        "socket_errors": socket_errors,
        "hot_requests": hot_requests,
        "hot_ok": hot_ok,
        "traffic_commands": traffic_commands,
        "traffic_cps": traffic_commands / traffic_s,
        "traffic_redis_cpu": redis_cpu / traffic_s * 100,
        "commands_per_request": traffic_commands / max(requests, 1),
        "gw_cpu_us": gw_cpu / max(requests, 1) * 1e6,
        "idle_commands": idle_commands,
        "idle_cps": idle_commands / idle_s,
        "idle_redis_cpu": redis_idle_cpu / idle_s * 100,
        "idle_gw_cpu": gw_idle_cpu / idle_s * 100,
        "traffic_stats": traffic_stats,
        "idle_stats": idle_stats,
        "status_traffic": status_traffic,
        "status_idle": status_idle,
        "keys": keys,
        "dropped": dropped,
        "dead": dead,
        **logs,
    }


async def fixed_rate_client(ports, rate, seconds, client):
    """One client at `rate` requests a second in all, request n to gateway n mod G at
    t0 + n / rate, one keep-alive connection per gateway. Returns statuses and the time."""
    g = len(ports)
    total = int(rate * seconds)
    statuses = {}
    request = (f"GET /api/small HTTP/1.1\r\nHost: {HOST}\r\nX-Forwarded-For: {client}\r\n\r\n").encode()

    async def exchange(reader, writer):
        """One request and its answer: (status, whether the gateway closes afterwards)."""
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            await reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        return status, fields.get("connection", "").lower() == "close"

    async def one_gateway(k, port, t0):
        # keep-alive, reconnecting when the gateway closes (server.keepalive_requests)
        loop = asyncio.get_running_loop()
        conn = None
        try:
            for n in range(k, total, g):
                wait = t0 + n / rate - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                for attempt in range(3):
                    if conn is None:
                        conn = await asyncio.open_connection(HOST, port)
                    try:
                        status, close = await exchange(*conn)
                    except (asyncio.IncompleteReadError, ConnectionError):
                        # closed before an answer began: send it again on a new connection
                        conn[1].close()
                        conn = None
                        if attempt == 2:
                            raise
                        continue
                    statuses[status] = statuses.get(status, 0) + 1
                    if close:
                        conn[1].close()
                        conn = None
                    break
        finally:
            if conn is not None:
                conn[1].close()

    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    await asyncio.wait_for(
        asyncio.gather(*(one_gateway(k, port, t0) for k, port in enumerate(ports))),
        timeout=seconds + 30,
    )
    return statuses, loop.time() - t0


def run_repeat(tmp, redis, redis_pid, args):
    tag = "repeat"
    redis.call("FLUSHALL")
    procs, ports, admins = start_gateways(tmp, args.gateways, tag)
    try:
        redis.call("CONFIG", "RESETSTAT")
        redis_cpu0 = cpu_seconds(redis_pid)
        gw_cpu0 = [cpu_seconds(p.pid) for p in procs]
        statuses, elapsed = asyncio.run(
            fixed_rate_client(ports, args.repeat_rate, args.repeat_seconds, REPEAT_CLIENT)
        )
        stats = redis.commandstats()
        redis_cpu = cpu_seconds(redis_pid) - redis_cpu0
        gw_cpu = sum(cpu_seconds(p.pid) - c for p, c in zip(procs, gw_cpu0))
        status = store_status(admins)
    finally:
        stop_gateways(procs)
    for i in range(args.gateways):
        (Path(tmp) / f"access{i}.{tag}.log").unlink(missing_ok=True)
    requests = sum(statuses.values())
    commands = sum(stats.values())
    return {
        "requests": requests,
        "rate": requests / elapsed,
        "elapsed": elapsed,
        "ok": statuses.get(200, 0),
        "statuses": statuses,
        "commands": commands,
        "commands_per_request": commands / max(requests, 1),
        "redis_cpu": redis_cpu / elapsed * 100,
        "gw_cpu_us": gw_cpu / max(requests, 1) * 1e6,
        "stats": stats,
        "status": status,
    }


def fmt_stats(stats):
    return ", ".join(f"{k} {v:,}" for k, v in sorted(stats.items(), key=lambda kv: -kv[1])) or "none"


def mark(ok):
    return "✓" if ok else "✗"


def clients_report(results, repeat, args, binary, redis_version):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    durations = ", ".join(f"{r['duration']} s at {r['size']:,}" for r in results)
    hot_share = f"1 request in {args.hot_every}" if args.hot_every > 0 else "none"
    lines = [
        f"## Many clients: {args.gateways} gateways, one Redis",
        "",
        f"- binary: {binary}",
        f"- run: {now}, {os.cpu_count()} CPUs, redis-server {redis_version}",
        f"- {args.gateways} gateways (threads = 1 each, `trusted_proxies = [\"127.0.0.1\"]`), "
        f"`[rate_limit] requests = {BUDGET}, window = \"1h\", store = redis, sync = \"50ms\"`; "
        f"an nginx upstream answering 200; everything on 127.0.0.1",
        f"- each size: Redis flushed and the gateways started anew; traffic ({durations}) from one wrk "
        f"per gateway ({args.crowd_connections} connections, benches/clients.lua), its Redis counts read "
        f"{SETTLE:g} s after wrk ends (the last syncs' push of what was counted just before), then "
        f"{args.idle} s with the gateways running and no traffic",
        "- crowd: client i = request index mod N (X-Forwarded-For 10.a.b.c), dealt round-robin over the "
        "gateways; rounds = crowd requests / N (the slowest gateway's share, in brackets, must be ≥ 1 "
        "for every client to be reached)",
        f"- hot client {HOT_CLIENT}: {hot_share} on every wrk connection, so on all gateways; its 200s "
        "counted in the gateways' access logs",
        "- Redis commands: every command in INFO commandstats (those run inside scripts included), "
        "without the bench's own INFO/CONFIG/FLUSHALL/DBSIZE; CONFIG RESETSTAT at the start of each "
        "phase. CPU: /proc/PID/stat, user + system; Redis as % of one core, the gateways (all of them) "
        "per request or as % of one core",
        "- CPU figures are noisy (2 cores shared with wrk, nginx and whatever else runs); command counts are not",
        "- targets (shown, not enforced): ≤ 2 commands per request under traffic, ≤ 10 commands/s in all "
        "after it stops, hot client within 5 % of its budget, repeat case ≤ 0.3 commands per request",
        "",
        "### Under traffic",
        "",
        "| clients | requests/s | requests | rounds (slowest gateway) | crowd clients given a 200 | crowd non-200 | Redis commands/s | Redis CPU | Redis commands per request (≤ 2) | gateways' CPU per request |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cpr = r["commands_per_request"]
        crowd_bad = sum(v for k, v in r["crowd_other"].items() if k != "0")
        lines.append(
            f"| {r['size']:,} | {r['rps']:,.0f} | {r['requests']:,} | {r['rounds']:.2f} ({r['rounds_slowest']:.2f}) "
            f"| {r['crowd_clients_ok']:,} of {r['size']:,} | {crowd_bad:,} | {r['traffic_cps']:,.0f} "
            f"| {r['traffic_redis_cpu']:.0f} % | {cpr:.3f} {mark(cpr <= 2)} | {r['gw_cpu_us']:.1f} µs |"
        )
    lines += [
        "",
        f"### After traffic stops ({args.idle} s, gateways running), and the hot client",
        "",
        "| clients | Redis commands/s after (≤ 10) | Redis CPU after | gateways' CPU after | Redis keys at the end | "
        "hot client's requests | hot 200s / budget | error (≤ 5 %) | store state: traffic end; idle end |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        err = (r["hot_ok"] - BUDGET) / BUDGET * 100
        states = "; ".join(
            " ".join(str(s["state"]) for s in phase) for phase in (r["status_traffic"], r["status_idle"])
        )
        lines.append(
            f"| {r['size']:,} | {r['idle_cps']:,.1f} {mark(r['idle_cps'] <= 10)} | {r['idle_redis_cpu']:.0f} % "
            f"| {r['idle_gw_cpu']:.0f} % | {r['keys']:,} | {r['hot_requests']:,} "
            f"({r['hot_requests'] / max(r['requests'], 1) * 100:.1f} %) | {r['hot_ok']:,} / {BUDGET:,} "
            f"| {err:+.1f} % {mark(abs(err) <= 5)} | {states} |"
        )
    if repeat:
        cpr = repeat["commands_per_request"]
        err = (repeat["ok"] - BUDGET) / BUDGET * 100
        lines += [
            "",
            f"### Repeat: one client ({REPEAT_CLIENT}) at a fixed pace, round-robin over {args.gateways} gateways "
            f"(asyncio, one keep-alive connection per gateway)",
            "",
            "| requests/s | requests | Redis commands per request (≤ 0.3) | Redis commands/s | Redis CPU | gateways' CPU per request | 200s / budget | error |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {repeat['rate']:,.0f} | {repeat['requests']:,} | {cpr:.3f} {mark(cpr <= 0.3)} "
            f"| {repeat['commands'] / repeat['elapsed']:,.0f} | {repeat['redis_cpu']:.0f} % "
            f"| {repeat['gw_cpu_us']:.1f} µs | {repeat['ok']:,} / {BUDGET:,} | {err:+.1f} % |",
        ]
    lines += ["", "### Details", ""]
    for r in results:
        errors = sorted({s["last_error"] for s in r["status_traffic"] + r["status_idle"] if s.get("last_error")})
        lines.append(
            f"- {r['size']:,} clients: traffic {r['traffic_s']:.1f} s, {r['traffic_commands']:,} commands "
            f"({fmt_stats(r['traffic_stats'])}); after {r['idle_s']:.1f} s, {r['idle_commands']:,} commands "
            f"({fmt_stats(r['idle_stats'])}); requests per gateway {r['per_gateway']}; "
            f"hot client's answers by status {dict(sorted(r['hot'].items()))}; "
            f"crowd's non-200 answers by status {r['crowd_other'] or 'none'} (0: a request wrk cut at its end); "
            f"wrk non-2xx {r['non2xx']:,}, socket errors {r['socket_errors']}; "
            f"script calls per gateway (status API, end) {[s['calls'] for s in r['status_idle']]}; "
            f"access-log lines {r['log_lines']:,}, dropped {r['dropped']}"
            + (f"; store errors seen: {errors}" if errors else "")
            + (f"; gateways exited early: {r['dead']}" if r["dead"] else "")
        )
    if repeat:
        lines.append(
            f"- repeat: {repeat['elapsed']:.1f} s, statuses {dict(sorted(repeat['statuses'].items()))}, "
            f"{repeat['commands']:,} commands ({fmt_stats(repeat['stats'])}); store state "
            f"{[str(s['state']) for s in repeat['status']]}"
        )
    return "\n".join(lines) + "\n"


def run_clients(tmp, args, redis_proc):
    redis = Redis()
    try:
        redis_version = re.search(r"redis_version:(\S+)", redis.call("INFO", "server"))
        redis_version = redis_version.group(1) if redis_version else "?"
        results = []
        for n, size in enumerate(args.sizes):
            duration = args.clients_duration[min(n, len(args.clients_duration) - 1)]
            print(f"cluster.py: {size:,} clients, {duration} s + {args.idle} s ...", file=sys.stderr, flush=True)
            results.append(run_clients_size(tmp, redis, redis_proc.pid, size, duration, args))
        repeat = None
        if args.repeat_seconds > 0:
            print("cluster.py: repeat case ...", file=sys.stderr, flush=True)
            try:
                repeat = run_repeat(tmp, redis, redis_proc.pid, args)
            except Exception as e:  # keep the sizes' results
                print(f"cluster.py: the repeat case failed: {e!r}", file=sys.stderr)
        redis.call("FLUSHALL")
    finally:
        redis.close()
    return clients_report(results, repeat, args, describe_binary(), redis_version)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--gateways", type=int, default=3)
    ap.add_argument("--connections", type=int, default=30)
    ap.add_argument("--out", default=str(REPO / "benches" / "results"))
    ap.add_argument("--modes", default="local,sync50,sync0,clients",
                    help="comma-separated: local, sync50, sync0 (cluster.md), clients (cluster-clients.md)")
    ap.add_argument("--sizes", default="1000,10000,100000", help="clients mode: crowd sizes")
    ap.add_argument("--clients-duration", default="15,15,25",
                    help="clients mode: seconds of traffic, one value or one per size (the last repeats)")
    ap.add_argument("--idle", type=int, default=10, help="clients mode: seconds without traffic after it")
    ap.add_argument("--crowd-connections", type=int, default=24, help="clients mode: crowd connections per gateway")
    ap.add_argument("--hot-every", type=int, default=14,
                    help="clients mode: every Nth request is the hot client's (0: no hot client)")
    ap.add_argument("--repeat-rate", type=int, default=1000, help="repeat case: requests a second in all")
    ap.add_argument("--repeat-seconds", type=float, default=5, help="repeat case: seconds (0: skip it)")
    ap.add_argument("--clients-file", default="cluster-clients.md", help="clients mode: file name under --out")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"local", "sync50", "sync0", "clients"}
    if unknown:
        sys.exit(f"unknown mode(s): {', '.join(sorted(unknown))}")
    args.sizes = [int(x.replace("_", "")) for x in args.sizes.split(",") if x.strip()]
    args.clients_duration = [int(x) for x in args.clients_duration.split(",") if x.strip()]
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
            if mode in modes
        ]
        clients_text = run_clients(tmp, args, redis) if "clients" in modes else None
    finally:
        for p in (upstream, redis):
            if p:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if clients_text:
        print(clients_text)
        (out / args.clients_file).write_text(clients_text)
    if not results:
        return
    base = next((r for r in results if r["mode"] == "local"), results[0])
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
    (out / "cluster.md").write_text(text)


if __name__ == "__main__":
    main()

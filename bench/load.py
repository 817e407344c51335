"""Load generation and accounting: wrk runs, a raw-socket SSE client (TTFB), and /proc CPU and RSS."""

from __future__ import annotations

import os
import re
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence
from urllib.parse import urlsplit

CLK_TCK = os.sysconf("SC_CLK_TCK")

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-client"
local f = io.open(os.getenv("RP_BODY_FILE"), "r")
wrk.body = f:read("*a")
f:close()
local limit = tonumber(os.getenv("RP_LIMIT") or "0")
if limit > 0 then
  local n = 0
  function response(status, headers, body)
    n = n + 1
    if n >= limit then wrk.thread:stop() end
  end
end
"""


# --- /proc accounting ----------------------------------------------------------


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the processes (seconds)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def children_of(pid: int) -> List[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


# --- wrk -------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    cpu_ms_per_req: Optional[float] = None
    raw: str = ""


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def wrk(url: str, body: str, *, conns: int, duration: float, threads: int = 1, limit_per_thread: int = 0,
        cpu_pids: Sequence[int] = (), timeout_s: int = 10) -> WrkResult:
    """POST `body` to `url` for `duration` seconds (or `limit_per_thread` responses per wrk thread)."""
    with tempfile.TemporaryDirectory(prefix="rp-bench-") as tmp:
        script, body_file = os.path.join(tmp, "post.lua"), os.path.join(tmp, "body.json")
        with open(script, "w") as fh:
            fh.write(WRK_SCRIPT)
        with open(body_file, "w") as fh:
            fh.write(body)
        env = dict(os.environ, RP_BODY_FILE=body_file, RP_LIMIT=str(limit_per_thread))
        argv = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{max(1, int(duration))}s", "--latency",
                "--timeout", f"{timeout_s}s", "-s", script, url]
        cpu0 = cpu_seconds(cpu_pids)
        t0 = time.monotonic()
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, env=env)
        cpu1 = cpu_seconds(cpu_pids)
        if out.returncode != 0:
            raise RuntimeError(f"wrk failed: {out.stderr}")
    text = out.stdout
    res = WrkResult(raw=text, seconds=time.monotonic() - t0)
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if m:
        res.requests = int(m.group(1))
        res.seconds = _ms(m.group(2) + m.group(3)) / 1000.0
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    res.rps = float(m.group(1)) if m else 0.0
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", text, re.M)
        if m:
            setattr(res, attr, _ms(m.group(1)))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    res.errors += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        res.errors += sum(int(x) for x in m.groups())
    if cpu_pids and res.requests:
        res.cpu_ms_per_req = (cpu1 - cpu0) * 1000.0 / res.requests
    return res


# --- raw-socket SSE client -------------------------------------------------------


@dataclass
class StreamResult:
    ok: bool
    ttfb_ms: float = float("nan")
    total_ms: float = float("nan")
    error: str = ""


def stream_once(url: str, body: bytes, timeout: float = 60.0, end_marker: bytes = b"[DONE]") -> StreamResult:
    """One POST on a fresh connection; TTFB = time until the first SSE `data:` byte of the body arrives."""
    parts = urlsplit(url)
    req = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
           f"Authorization: Bearer sk-bench-client\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
           ).encode() + body
    t0 = time.perf_counter()
    ttfb = None
    buf = bytearray()
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as s:
            s.sendall(req)
            while True:
                data = s.recv(65536)
                if not data:
                    break
                buf += data
                if ttfb is None and b"data:" in buf:
                    ttfb = time.perf_counter() - t0
    except OSError as exc:
        return StreamResult(False, error=f"{type(exc).__name__}: {exc}")
    total = time.perf_counter() - t0
    status_line = bytes(buf[:buf.find(b"\r\n")]) if buf else b""
    if b" 200 " not in status_line + b" ":
        return StreamResult(False, error=status_line.decode("latin-1") or "no answer")
    if end_marker not in buf:
        return StreamResult(False, error="stream ended without its end marker")
    return StreamResult(True, (ttfb or total) * 1000.0, total * 1000.0)


@dataclass
class StreamsSummary:
    n: int
    served: int
    errors: List[str] = field(default_factory=list)
    ttfb_p50: float = float("nan")
    ttfb_p99: float = float("nan")
    total_p50: float = float("nan")
    wall_s: float = 0.0
    cpu_ms_per_req: Optional[float] = None


def pct(values: List[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def streams(url: str, body: bytes, *, concurrency: int, total: int, cpu_pids: Sequence[int] = (),
            end_marker: bytes = b"[DONE]", timeout: float = 60.0) -> StreamsSummary:
    """`total` streams with `concurrency` client threads, all starting together."""
    results: List[StreamResult] = []
    lock = threading.Lock()
    counter = iter(range(total))
    start = threading.Barrier(concurrency)

    def worker() -> None:
        try:
            start.wait(timeout=30)
        except threading.BrokenBarrierError:
            pass
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            r = stream_once(url, body, timeout, end_marker)
            with lock:
                results.append(r)

    cpu0 = cpu_seconds(cpu_pids)
    t0 = time.monotonic()
    pool = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout + 60)
    wall = time.monotonic() - t0
    cpu1 = cpu_seconds(cpu_pids)
    ok = [r for r in results if r.ok]
    summary = StreamsSummary(total, len(ok), [r.error for r in results if not r.ok], wall_s=wall)
    summary.errors += ["no result (client thread timed out)"] * (total - len(results))
    summary.ttfb_p50 = pct([r.ttfb_ms for r in ok], 50)
    summary.ttfb_p99 = pct([r.ttfb_ms for r in ok], 99)
    summary.total_p50 = statistics.median([r.total_ms for r in ok]) if ok else float("nan")
    if cpu_pids and results:
        summary.cpu_ms_per_req = (cpu1 - cpu0) * 1000.0 / len(results)
    return summary


def process_rss(pids: Sequence[int]) -> Dict[int, float]:
    return {pid: rss_mb(pid) for pid in pids}


# --- many concurrent streams (asyncio: the client must not eat the CPU it measures) ----------


async def _stream_async(host: str, port: int, req: bytes, timeout: float, end_marker: bytes) -> StreamResult:
    import asyncio

    t0 = time.perf_counter()
    ttfb = None
    buf = bytearray()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            writer.write(req)
            await writer.drain()
            while True:
                data = await asyncio.wait_for(reader.read(65536), timeout)
                if not data:
                    break
                buf += data
                if ttfb is None and b"data:" in buf:
                    ttfb = time.perf_counter() - t0
        finally:
            writer.close()
    except (OSError, asyncio.TimeoutError) as exc:
        return StreamResult(False, error=f"{type(exc).__name__}: {exc}")
    total = time.perf_counter() - t0
    if not buf.startswith(b"HTTP/1.1 200"):
        return StreamResult(False, error=bytes(buf[:60]).decode("latin-1") or "no answer")
    if end_marker not in buf:
        return StreamResult(False, error="stream ended without its end marker")
    return StreamResult(True, (ttfb or total) * 1000.0, total * 1000.0)


def many_streams(url: str, body: bytes, *, n: int, ramp_s: float = 0.0, cpu_pids: Sequence[int] = (),
                 end_marker: bytes = b"[DONE]", timeout: float = 60.0) -> StreamsSummary:
    """`n` streams on `n` connections, started evenly over `ramp_s` seconds (0: all at once), from one event loop."""
    import asyncio

    parts = urlsplit(url)
    req = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
           f"Authorization: Bearer sk-bench-client\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
           ).encode() + body

    async def one(i: int) -> StreamResult:
        if ramp_s:
            await asyncio.sleep(ramp_s * i / n)
        return await _stream_async(parts.hostname or "127.0.0.1", parts.port or 80, req, timeout, end_marker)

    async def run() -> List[StreamResult]:
        return list(await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), timeout + ramp_s + 30))

    cpu0 = cpu_seconds(cpu_pids)
    t0 = time.monotonic()
    results = asyncio.run(run())
    wall = time.monotonic() - t0
    cpu1 = cpu_seconds(cpu_pids)
    ok = [r for r in results if r.ok]
    summary = StreamsSummary(n, len(ok), [r.error for r in results if not r.ok], wall_s=wall)
    summary.ttfb_p50 = pct([r.ttfb_ms for r in ok], 50)
    summary.ttfb_p99 = pct([r.ttfb_ms for r in ok], 99)
    summary.total_p50 = statistics.median([r.total_ms for r in ok]) if ok else float("nan")
    if cpu_pids and results:
        summary.cpu_ms_per_req = (cpu1 - cpu0) * 1000.0 / len(results)
    return summary

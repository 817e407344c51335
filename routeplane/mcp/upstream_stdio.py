"""stdio upstream: a subprocess per worker, started lazily, restarted when it dies, shared by threads."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
from typing import IO, Any, Callable, Dict, Optional, Tuple

from .inflight import Flight
from .settings import MCPServerConfig
from .upstream import Upstream, UpstreamFailure, log

STARTUP_TIMEOUT = 30.0
MAX_LINE_BYTES = 64 * 1024 * 1024  # one message from the child, as one HTTP upstream answer (upstream_http)
_LEADING_ID = re.compile(rb'^\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(\d{1,18})\s*,')
INHERITED_ENV = frozenset({"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "LC_CTYPE",
                           "TMPDIR", "TZ", "SYSTEMROOT"})


class _Pending:
    __slots__ = ("event", "response", "failure", "generation")

    def __init__(self, generation: int) -> None:
        self.event = threading.Event()
        self.response: Optional[Dict[str, Any]] = None
        self.failure: Optional[str] = None
        self.generation = generation


class _Line:
    """One line for the child's stdin, handed to the process's writer thread."""

    __slots__ = ("data", "done", "failed", "abandoned")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.done = threading.Event()
        self.failed = False
        self.abandoned = False  # its sender stopped waiting: not written if not begun


class StdioUpstream(Upstream):
    """Newline-delimited JSON-RPC over a child's stdin/stdout (mcp.md §1).

    Many request threads share one process: each request gets a gateway-side
    id (never the client's), registers a pending slot, queues its line for
    the process's one writer thread and waits with its timeout (a child that
    stops reading stdin fills the pipe: a request thread blocked in write()
    would outlive its timeout and hold up every later one); one reader thread per process
    hands each response to its slot. When the process exits, every pending
    request fails at once and the next request starts a new process (and
    handshakes again). The child's stderr goes to the gateway's stderr.
    """

    def __init__(self, config: MCPServerConfig, on_notification: Callable[[str, str, Dict[str, Any]], None]) -> None:
        super().__init__(config, on_notification)
        self._proc: Optional[subprocess.Popen] = None
        self._generation = 0
        self._ended = 0  # the newest generation whose stdout reached EOF (the process is dead or dying)
        self._outbox: "Optional[queue.Queue[Optional[_Line]]]" = None
        self._pending: Dict[int, _Pending] = {}
        self._pending_lock = threading.Lock()
        self.starts = 0  # how many processes this worker started (restarts = starts - 1)

    @property
    def handshake_timeout(self) -> float:
        # The first answer includes the child's start-up (an interpreter importing its SDK takes
        # seconds), so a tight per-call timeout must not make the process unstartable.
        return max(self.config.timeout, STARTUP_TIMEOUT)

    def ensure_initialized(self) -> None:
        with self._init_lock:
            # stdout EOF comes before the exit status can be reaped: trust either signal.
            if self._proc is None or self._proc.poll() is not None or self._ended >= self._generation:
                self._start()
            if not self._initialized:
                self._handshake()

    def _start(self) -> None:
        if self._proc is not None:
            log.warning("stdio MCP server %r exited with %s; restarting it", self.server, self._proc.returncode)
            self._end_writer()
            self._reap(self._proc)
        self._initialized = False
        # A minimal inherited environment (as the MCP SDK's stdio client does), not the gateway's own:
        # the child must not see provider API keys or the session secret.
        env = {k: v for k, v in os.environ.items() if k in INHERITED_ENV or k.startswith("LC_")}  # docs: LANG, LC_*
        env.update(self.config.env)
        try:
            proc = subprocess.Popen(
                [self.config.command or "", *self.config.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=None, cwd=self.config.cwd, env=env, bufsize=0)
        except OSError as exc:
            self._proc = None
            raise UpstreamFailure(self.server, f"could not be started ({type(exc).__name__}: {exc.strerror})") from None
        self._generation += 1
        self._proc = proc
        self.starts += 1
        outbox: "queue.Queue[Optional[_Line]]" = queue.Queue()
        self._outbox = outbox
        threading.Thread(target=self._writer, args=(proc, outbox), name=f"mcp-stdio-w-{self.server}",
                         daemon=True).start()
        threading.Thread(target=self._reader, args=(proc, self._generation), name=f"mcp-stdio-{self.server}",
                         daemon=True).start()

    @staticmethod
    def _writer(proc: subprocess.Popen, outbox: "queue.Queue[Optional[_Line]]") -> None:
        broken = False
        while True:
            item = outbox.get()
            if item is None:
                return
            if not (broken or item.abandoned):
                try:
                    proc.stdin.write(item.data)  # type: ignore[union-attr]
                    proc.stdin.flush()  # type: ignore[union-attr]
                except (OSError, ValueError, AttributeError):
                    broken = True  # the child is gone: this line and every later one fail
            item.failed = broken
            item.done.set()

    def _reader(self, proc: subprocess.Popen, generation: int) -> None:
        stdout: IO[bytes] = proc.stdout  # type: ignore[assignment]
        try:
            for line in iter(lambda: stdout.readline(MAX_LINE_BYTES + 1), b""):
                if len(line) > MAX_LINE_BYTES:
                    # Never held whole (a runaway child must not exhaust the worker): skipped to its end,
                    # and the request it answers, when its start says which, fails now rather than at its timeout.
                    self._oversized(line[:200])
                    while line and not line.endswith(b"\n"):
                        line = stdout.readline(1 << 20)
                    continue
                try:
                    self._line(line)
                except Exception:  # one bad line must not stop the reader (that fails every request)
                    log.exception("stdio MCP server %r: handling a line failed", self.server)
        except (OSError, ValueError):
            pass
        finally:
            with self._pending_lock:
                self._ended = max(self._ended, generation)
                dead = [(k, p) for k, p in self._pending.items() if p.generation == generation]
                for key, _ in dead:
                    del self._pending[key]
            for _key, pending in dead:
                pending.failure = "exited while handling the request"
                pending.event.set()

    def _oversized(self, head: bytes) -> None:
        log.warning("stdio MCP server %r wrote a message over %d bytes; skipped", self.server, MAX_LINE_BYTES)
        match = _LEADING_ID.match(head)
        if match:
            with self._pending_lock:
                pending = self._pending.pop(int(match.group(1)), None)
            if pending is not None:
                pending.failure = f"answered more than {MAX_LINE_BYTES} bytes"
                pending.event.set()

    def _line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            msg = json.loads(line)
        except ValueError:
            log.warning("stdio MCP server %r wrote a line that is not JSON; ignored", self.server)
            return
        if not isinstance(msg, dict):
            return
        if "method" in msg and "id" in msg:  # server-to-client request: no such capability offered
            self._write({"jsonrpc": "2.0", "id": msg["id"],
                         "error": {"code": -32601, "message": "the gateway does not support this request"}},
                        wait=None)
        elif "method" in msg:
            self.notified(msg["method"], msg.get("params") or {})
        elif isinstance(msg.get("id"), int):
            with self._pending_lock:
                pending = self._pending.pop(msg["id"], None)
            if pending is not None:
                pending.response = msg
                pending.event.set()

    def _write(self, message: Dict[str, Any], wait: Optional[float] = 0.0) -> None:
        """Queue one line for the writer thread and wait up to `wait` seconds (0: the server's timeout)
        for it to be written; `wait=None` does not wait (the reader thread's replies, cancellations)."""
        proc, outbox = self._proc, self._outbox
        if proc is None or proc.stdin is None or outbox is None:
            raise UpstreamFailure(self.server, "is not running")
        line = _Line(json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n")  # no embedded newlines
        outbox.put(line)
        if wait is None:
            return
        wait = wait or self.config.timeout
        if not line.done.wait(wait):
            line.abandoned = True
            raise UpstreamFailure(self.server, f"did not read its input within {wait:g}s", timeout=True)
        if line.failed:
            raise UpstreamFailure(self.server, "exited (its stdin is closed)")

    def _exchange(self, message: Dict[str, Any], timeout: float, initializing: bool = False,
                  flight: Optional[Flight] = None) -> Dict[str, Any]:
        pending = _Pending(self._generation)
        with self._pending_lock:
            if pending.generation <= self._ended:
                raise UpstreamFailure(self.server, "exited")
            self._pending[message["id"]] = pending
        if flight is not None and flight.cancelled:  # cancelled before its slot existed for cancel() to end
            with self._pending_lock:
                self._pending.pop(message["id"], None)
            raise UpstreamFailure(self.server, "was not sent: the client cancelled the call")
        deadline = time.monotonic() + timeout
        try:
            self._write(message, wait=timeout)
        except UpstreamFailure as exc:
            with self._pending_lock:
                self._pending.pop(message["id"], None)
            if exc.timeout:
                self._cancel(message["id"])
            raise
        if not pending.event.wait(max(0.0, deadline - time.monotonic())):
            with self._pending_lock:
                self._pending.pop(message["id"], None)
            self._cancel(message["id"])
            raise UpstreamFailure(self.server, f"did not answer within {timeout:g}s", timeout=True)
        if pending.failure is not None:
            raise UpstreamFailure(self.server, pending.failure)
        assert pending.response is not None
        return pending.response

    def _exchange_cancellable(self, message: Dict[str, Any], timeout: float, flight: Flight) -> Dict[str, Any]:
        return self._exchange(message, timeout, flight=flight)  # cancel() ends the wait: no thread needed

    def cancel(self, upstream_id: Any, reason: Optional[str]) -> None:
        """Forward the client's cancel and fail the waiting request at once (its late answer is dropped)."""
        with self._pending_lock:
            pending = self._pending.pop(upstream_id, None)
        self._cancel(upstream_id, reason)
        if pending is not None:
            pending.failure = "was not waited for: the client cancelled the call"
            pending.event.set()

    def _cancel(self, request_id: int, reason: Optional[str] = "timeout") -> None:
        params: Dict[str, Any] = {"requestId": request_id}
        if reason:
            params["reason"] = reason
        try:  # let the server stop working on it (mcp.md §8); a late answer is dropped
            self._write({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}, wait=None)
        except UpstreamFailure:
            pass

    def _send_notification(self, method: str, params: Optional[Dict[str, Any]] = None) -> None:
        message: Dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._write(message)

    @staticmethod
    def _reap(proc: subprocess.Popen) -> None:
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=2)

    def _end_writer(self) -> None:
        outbox, self._outbox = self._outbox, None
        if outbox is not None:
            outbox.put(None)  # the writer thread ends once the lines before it are handled

    def close(self) -> None:
        with self._init_lock:
            proc, self._proc = self._proc, None
            self._initialized = False
            self._end_writer()
        if proc is None:
            return
        if proc.poll() is None:
            try:  # closing stdin is the stdio transport's shutdown signal; terminate if it lingers
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(timeout=1)
            except (OSError, subprocess.TimeoutExpired):
                proc.terminate()
        self._reap(proc)

    def pid(self) -> Optional[int]:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None


__all__: Tuple[str, ...] = ("StdioUpstream",)

"""One configured agent's process: its environment, a reader thread on its stdout, a writer thread on its stdin."""

from __future__ import annotations

import itertools
import json
import logging
import math
import subprocess
import threading
from collections import deque
from typing import IO, Any, Callable, Dict, List, Mapping, Optional, Tuple

from .settings import AgentConfig

log = logging.getLogger("routeplane.acp")

Reply = Callable[[Dict[str, Any]], None]  # gets the agent's whole response object ({"result"} or {"error"})


class LineWriter:
    """Newline-delimited JSON on one stream; the lock keeps lines from several threads whole."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: Mapping[str, Any]) -> bool:
        data = encode_or_drop(message)
        if data is None:
            return False
        with self._lock:
            try:
                self._stream.write(data)
                self._stream.flush()
                return True
            except (OSError, ValueError):  # closed pipe: the peer is gone
                return False


class AgentInput:
    """Newline-delimited JSON to one agent's stdin, written by a thread of its own.

    `send` only queues. Written by the caller, one agent that stops reading its stdin (the pipe
    buffer full) blocked the relay's single editor-reading thread in `write`: every other agent, and
    the answers to the editor, waited on it. Past `max_bytes` queued the agent is `stalled`: sends
    are refused (the caller answers the editor an error) instead of growing the queue without end.
    """

    def __init__(self, stream: IO[bytes], name: str, max_bytes: int) -> None:
        self._stream = stream
        self._max_bytes = max_bytes
        self._lines: "deque[bytes]" = deque()
        self._queued = 0  # bytes queued or being written
        self._closed = False
        self._broken = False
        self._cond = threading.Condition()
        self.stalled = False
        self._thread = threading.Thread(target=self._write_lines, name=f"acp-agent-{name}-stdin", daemon=True)
        self._thread.start()

    def send(self, message: Mapping[str, Any]) -> bool:
        data = encode_or_drop(message)
        if data is None:
            return False
        with self._cond:
            if self._closed or self._broken:
                return False
            # One line larger than the bound still goes when nothing waits (a prompt with big images).
            if self._queued and self._queued + len(data) > self._max_bytes:
                self.stalled = True
                return False
            self.stalled = False
            self._lines.append(data)
            self._queued += len(data)
            self._cond.notify()
        return True

    @property
    def queued_bytes(self) -> int:
        with self._cond:
            return self._queued

    def close(self, discard: bool = False) -> None:
        """Close stdin once what is queued is written (or dropped, with `discard`); returns at once."""
        with self._cond:
            self._closed = True
            if discard:
                self._lines.clear()
                self._queued = 0
                self.stalled = False
            self._cond.notify()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout=timeout)

    def _write_lines(self) -> None:
        while True:
            with self._cond:
                while not self._lines and not self._closed:
                    self._cond.wait()
                if not self._lines:
                    break
                data = self._lines.popleft()
            try:
                self._stream.write(data)
                self._stream.flush()
            except (OSError, ValueError):  # closed pipe: the agent is gone (its watcher reports the exit)
                with self._cond:
                    # Not stalled any more: a request refused now is refused for the exit, not the stall.
                    self._broken, self.stalled = True, False
                    self._lines.clear()
                    self._queued = 0
                break
            with self._cond:
                self._queued = max(0, self._queued - len(data))
        try:
            self._stream.close()
        except (OSError, ValueError):
            pass


def encode_or_drop(message: Mapping[str, Any]) -> Optional[bytes]:
    """`encode_line`, or None (with a warning) for a message nested past what the encoder can recurse
    (it parsed, a few frames shallower): such a message is not relayed."""
    try:
        return encode_line(message)
    except (RecursionError, ValueError, TypeError):
        log.warning("a message could not be encoded as one JSON line (dropped)")
        return None


def encode_line(message: Mapping[str, Any]) -> bytes:
    """One JSON line, always valid JSON.

    A lone surrogate ("\\ud83d": a string cut inside an emoji) has no UTF-8 form: escaped, the peer
    reads the very string the sender wrote. NaN and ±Infinity are not JSON, yet Python's reader
    accepts them (and reads 1e400 as inf): written as they are, a peer's strict parser drops the
    whole line (a prompt's answer included, so the turn never ends for it); they become null.
    """
    try:
        return _dumps(message, ensure_ascii=False).encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return _dumps(message, ensure_ascii=True).encode("ascii") + b"\n"


def _dumps(message: Any, ensure_ascii: bool) -> str:
    try:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(message), separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def gateway_url(listen: str) -> str:
    """`http://host:port` of the gateway for an agent on this machine (a wildcard listen means loopback).

    Raises ValueError for a `unix:` or `fd://` listen: no URL an agent's HTTP client can reach (it got
    `http://unix:/run/rp.sock`, and each of its LLM calls failed on a host named "unix").
    """
    if listen.startswith(("unix:", "fd://")):
        raise ValueError(f"server.listen is {listen!r}, not an HTTP address the agent can reach")
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


# Provider credentials an editor may export, read by the SDKs whose base URLs point at the gateway.
PROVIDER_KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "GEMINI_API_KEY",
                          "GOOGLE_API_KEY")
# Without `gateway.token_env`: not a secret; SDKs refuse to start with no key at all (auth.mode none ignores it).
NO_KEY_PLACEHOLDER = "routeplane-no-key"


def agent_environment(agent: AgentConfig, listen: str, base: Mapping[str, str]) -> Dict[str, str]:
    """The agent's environment: routeplane's, plus the gateway's URLs and scoped token, plus `env` (wins).

    With the gateway on, the provider keys inherited from the editor are dropped: the agent's SDKs
    would send them to the gateway (its base URLs point there), which never uses them upstream.
    Raises ValueError (no secret in the message) when `gateway.token_env` names an unset variable, or
    when no gateway URL can be derived (a `unix:`/`fd://` listen without `gateway.base_url`).
    """
    env = dict(base)
    if agent.gateway_enabled:
        dropped = sorted(k for k in PROVIDER_KEY_VARIABLES if env.pop(k, None) and k not in agent.env)
        if dropped:
            log.info("agent %s: the provider keys %s of routeplane's environment are not passed on (they would "
                     "go to the gateway); agents.%s.env can set them explicitly", agent.name, ", ".join(dropped),
                     agent.name)
        try:
            url = (agent.gateway_base_url or gateway_url(listen)).rstrip("/")
        except ValueError as exc:
            raise ValueError(f"agents.{agent.name}.gateway.base_url is needed: {exc} "
                             "(or set gateway.enabled: false)") from None
        env.update({"ROUTEPLANE_BASE_URL": url, "OPENAI_BASE_URL": url + "/v1", "ANTHROPIC_BASE_URL": url,
                    "GOOGLE_GEMINI_BASE_URL": url})
        if agent.gateway_token_env:
            token = base.get(agent.gateway_token_env)
            if not token:
                raise ValueError(f"agents.{agent.name}.gateway.token_env: environment variable "
                                 f"{agent.gateway_token_env} is not set")
            env.update({"ROUTEPLANE_API_KEY": token, "OPENAI_API_KEY": token, "ANTHROPIC_API_KEY": token,
                        "GEMINI_API_KEY": token})
        else:
            env.update(dict.fromkeys(("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"), NO_KEY_PLACEHOLDER))
    env.update(agent.env)
    return env


class AgentProcess:
    """A running agent. `generation` numbers restarts, so session ids of a dead process never come back."""

    # How long a process may outlive the end of its stdout, and how long its last lines may take to be
    # read after it exited (a child of the agent may hold the pipe open: EOF may never come).
    EOF_GRACE_SECONDS = 5.0
    DRAIN_SECONDS = 0.5
    # Lines waiting for an agent that does not read its stdin, before requests to it are refused.
    MAX_QUEUED_BYTES = 64 * 1024 * 1024

    def __init__(self, agent: AgentConfig, env: Mapping[str, str], generation: int,
                 on_message: Callable[["AgentProcess", Dict[str, Any]], None],
                 on_exit: Callable[["AgentProcess", Optional[int]], None]) -> None:
        self.agent = agent
        self.name = agent.name
        self.generation = generation
        self._env = dict(env)
        self._on_message, self._on_exit = on_message, on_exit
        self._ids = itertools.count(0)
        self._pending: Dict[int, Tuple[str, Reply]] = {}
        self._reader: Optional[threading.Thread] = None
        self._watcher: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self.proc: Optional["subprocess.Popen[bytes]"] = None
        self._writer: Optional[AgentInput] = None
        self.dead = False
        self.exit_code: Optional[int] = None
        self.failure: Optional[str] = None  # why routeplane stopped it, when it did
        self.loaded: Dict[str, str] = {}  # agent's session id -> client's id, for sessions loaded from a past life
        # initialize state: None until the agent answered; waiters run after it
        self.init_result: Optional[Dict[str, Any]] = None
        self.initializing = False
        self.waiters: List[Tuple[Callable[[], None], Callable[[Dict[str, Any]], None]]] = []

    @property
    def prefix(self) -> str:
        return self.name if self.generation == 1 else f"{self.name}~{self.generation}"

    def client_sid(self, raw: str) -> str:
        """The id the client knows this session by: `<agent>[~<generation>]:<raw>`, or the id it loaded."""
        return self.loaded.get(raw) or f"{self.prefix}:{raw}"

    def start(self) -> None:
        """Start the process (raises OSError when the command cannot run) and its stdout reader."""
        a = self.agent
        # stderr is inherited: agent logs go where routeplane's go (acp.md §1: logs on stderr).
        self.proc = subprocess.Popen([a.command, *a.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=a.cwd, env=self._env)
        assert self.proc.stdin is not None
        self._writer = AgentInput(self.proc.stdin, self.name, self.MAX_QUEUED_BYTES)
        self._reader = threading.Thread(target=self._read, name=f"acp-agent-{self.name}", daemon=True)
        self._reader.start()
        self._watcher = threading.Thread(target=self._watch, name=f"acp-agent-{self.name}-exit", daemon=True)
        self._watcher.start()

    def send(self, message: Mapping[str, Any]) -> bool:
        return self._writer is not None and not self.dead and self._writer.send(message)

    def request(self, method: str, params: Any, reply: Reply) -> None:
        """Send a request with this connection's own id; `reply` gets the response (or a synthesized error)."""
        with self._lock:
            if self.dead:
                rid = None
            else:
                rid = next(self._ids)
                self._pending[rid] = (method, reply)
        if rid is None:
            reply({"error": self.death_error(method)})
        elif not self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}):
            with self._lock:
                entry = self._pending.pop(rid, None)
            if entry is not None:  # else _died answered it meanwhile: one answer per request
                reply({"error": self.unsent_error(method)})

    def unsent_error(self, method: str) -> Dict[str, Any]:
        """Why a request could not be written: the agent stopped reading its stdin, or it is gone."""
        writer = self._writer
        if not self.dead and isinstance(writer, AgentInput) and writer.stalled:
            mib = writer.queued_bytes / (1024 * 1024)
            log.warning("agent %s is not reading its stdin (%.1f MiB waiting): %s refused", self.name, mib, method)
            return {"code": -32603, "message": f"Agent {self.name!r} is not reading its input ({mib:.1f} MiB "
                                               f"waiting); {method} was not sent.",
                    "data": {"agent": self.name}}
        return self.death_error(method)

    def death_error(self, method: str) -> Dict[str, Any]:
        code = self.exit_code
        if code is None and self.proc is not None:
            # Exited, its last answers still being drained before `_died`: the exit is already known.
            code = self.proc.returncode
        if self.failure:
            how = self.failure
        elif code is None:
            how = "is not running"
        else:
            how = f"exited with code {code}" if code >= 0 else f"was killed by signal {-code}"
        return {"code": -32603, "message": f"Agent {self.name!r} {how}; {method} cannot complete.",
                "data": {"agent": self.name, "exitCode": code}}

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                line = line.strip()
                if not line:
                    continue
                try:
                    message = json.loads(line)
                except (ValueError, RecursionError):  # nested past the stack: not a message either
                    log.warning("agent %s wrote a line that is not JSON (ignored)", self.name)
                    continue
                if not isinstance(message, dict) or self.dead:
                    continue  # after the exit: a child of the agent still holding its stdout is not the agent
                try:
                    if "method" not in message and "id" in message:
                        with self._lock:
                            entry = self._pending.pop(message["id"], None) if isinstance(message["id"], int) else None
                        if entry is not None:
                            entry[1](message)
                        continue
                    self._on_message(self, message)
                except Exception:  # one message the relay cannot pass on must not cost the agent its reader
                    log.exception("relaying a message of agent %s failed", self.name)
        except Exception:
            log.exception("the reader of agent %s failed", self.name)
        finally:
            self._stdout_ended()

    def _stdout_ended(self) -> None:
        """EOF (or a dead reader) while the process still runs: it is of no use now; the watcher reports the exit."""
        proc = self.proc
        try:
            if proc is not None:
                proc.wait(timeout=self.EOF_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()  # type: ignore[union-attr]

    def _watch(self) -> None:
        """The exit, seen by waiting on the process itself, not by EOF on its stdout (which a tool
        process the agent started may keep open): what is pending is failed at once, and it is reaped."""
        assert self.proc is not None
        code = self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=self.DRAIN_SECONDS)  # answers it wrote before dying still count
        self._died(code)

    def _died(self, code: Optional[int]) -> None:
        with self._lock:
            if self.dead:
                return
            self.dead, self.exit_code = True, code
            pending, self._pending = self._pending, {}
        if isinstance(self._writer, AgentInput):
            self._writer.close(discard=True)  # nothing more is for this process; ends its writer thread
        for method, reply in pending.values():
            reply({"error": self.death_error(method)})
        self._on_exit(self, code)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # the watcher then sees the exit and fails what is pending

    def close(self, timeout: float = 2.0) -> None:
        """Close stdin once what is queued is written (the agent's cue to exit), then terminate, then
        kill; bounded. An agent that does not read keeps its writer blocked until it is stopped."""
        proc = self.proc
        if proc is None:
            return
        if self._writer is not None:
            self._writer.close()
        for stop in (None, proc.terminate, proc.kill):
            if stop is not None:
                stop()
            try:
                proc.wait(timeout=timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        if self._watcher is not None:
            self._watcher.join(timeout=timeout)  # the exit is reported (and pending requests failed) first
        if self._reader is not None:
            self._reader.join(timeout=self.DRAIN_SECONDS)  # it saw EOF; closing its pipe under it would race
        if self._writer is not None:
            self._writer.join(timeout=self.DRAIN_SECONDS)  # the stopped process broke its pipe: it ends
        if proc.stdout is not None and (self._reader is None or not self._reader.is_alive()):
            proc.stdout.close()

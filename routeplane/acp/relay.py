"""`routeplane acp`: one editor's ACP connection (stdio) relayed to the configured agents' processes."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from typing import IO, Any, Callable, Dict, Mapping, Optional, Tuple

from ..hooks.acp import ACPDecision
from .agents import AgentProcess, LineWriter, agent_environment
from .builder import ACPRuntime
from .context import ACPRequestContext, ACPTarget, ACPTurnEvent

log = logging.getLogger("routeplane.acp")

# Client-visible session id: "<agent>[~<generation>]:<the agent's id>". Agent names cannot hold ':' or '~',
# so two agents (or two lives of one agent) never hand the client the same id.
_SEP = ":"

_NEW_SESSION_METHODS = ("session/new", "session/fork", "session/resume")


def _error(code: int, message: str, data: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    err: Dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = dict(data)
    return err


def _agent_error(error: Any, agent: str) -> Dict[str, Any]:
    """An agent's `error` as a JSON-RPC error object: one without an integer code and a string message
    (`"error": "boom"`) would reach the editor as something a strict client cannot read as an error."""
    if (isinstance(error, dict) and isinstance(error.get("code"), int) and not isinstance(error["code"], bool)
            and isinstance(error.get("message"), str)):
        return error
    shown = json.dumps(error, ensure_ascii=False, default=str)[:300]
    return _error(-32603, f"Agent {agent!r} answered with a malformed error: {shown}", {"agent": agent})


def _valid_id(rid: Any) -> bool:
    """JSON-RPC ids are strings, numbers or null (not objects, arrays or booleans)."""
    return rid is None or (isinstance(rid, (str, int, float)) and not isinstance(rid, bool))


class ACPRelay:
    """Reads the editor on one thread, each agent on its own; writes to the editor under a lock, to each
    agent through that agent's own writer thread (one agent not reading never holds up another).

    Ids: each direction has its own id space (acp.md §1). Client requests get
    a fresh id per agent connection (`AgentProcess.request`), agent requests a
    fresh gateway id towards the client (`_to_client`), and answers are mapped back.
    """

    def __init__(self, runtime: ACPRuntime, agent: Optional[str], stdout: IO[bytes],
                 env: Mapping[str, str], listen: str) -> None:
        self.runtime = runtime
        self.initial = agent
        self.out = LineWriter(stdout)
        self._env, self._listen = dict(env), listen
        self._links: Dict[str, AgentProcess] = {}
        self._generations: Dict[str, int] = {}
        self._to_client: Dict[int, Tuple[AgentProcess, Any]] = {}
        self._ids = itertools.count(0)
        self._lock = threading.Lock()
        self._client_init: Optional[Dict[str, Any]] = None
        self._closing = False

    # --- editor side ---------------------------------------------------------

    def run(self, stdin: IO[bytes]) -> None:
        """Serve until the editor closes stdin, then stop every agent."""
        try:
            for line in stdin:
                line = line.strip()
                if line:
                    self.handle_client_line(line)
        finally:
            self.close()

    def handle_client_line(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            self.out.send({"jsonrpc": "2.0", "id": None, "error": _error(-32700, "Parse error: not JSON.")})
            return
        if not isinstance(message, dict):
            self.out.send({"jsonrpc": "2.0", "id": None, "error": _error(-32600, "Invalid request.")})
            return
        method = message.get("method")
        if method is not None and (not isinstance(method, str) or not _valid_id(message.get("id"))):
            rid = message.get("id") if _valid_id(message.get("id")) else None
            if "id" in message:  # a notification gets no answer, not even an error
                self._answer_error(rid, _error(-32600, "Invalid request: the method must be a string and the "
                                                       "id a string, a number or null."))
            return
        if method is None:
            try:
                self._client_answer(message)
            except Exception:  # one bad answer must not end the relay
                log.exception("relaying an answer of the client failed")
        elif "id" in message:
            if not isinstance(message.get("params", {}), (dict, type(None))):
                self._answer_error(message["id"], _error(-32602, "Invalid params: params must be an object."))
                return
            try:
                self._client_request(message["id"], str(method), message.get("params") or {})
            except Exception:
                log.exception("relaying %s failed", method)
                self._answer_error(message["id"], _error(-32603, f"Internal error relaying {method}."))
        elif isinstance(message.get("params", {}), (dict, type(None))):
            try:
                self._client_notification(str(method), message.get("params") or {})
            except Exception:
                log.exception("relaying the client's %s failed", method)

    def _answer_error(self, cid: Any, error: Mapping[str, Any]) -> None:
        self.out.send({"jsonrpc": "2.0", "id": cid, "error": dict(error)})

    def _client_request(self, cid: Any, method: str, params: Dict[str, Any]) -> None:
        if method == "initialize":
            self._initialize(cid, params)
            return
        client_sid = params.get("sessionId") if isinstance(params, dict) else None
        if method == "session/new" or not isinstance(client_sid, str):
            agent = self.initial
            ctx = ACPRequestContext(method, params, agent or "")
            if method == "session/new":
                try:
                    agent = self._route(ctx)
                except (TypeError, ValueError) as exc:
                    log.error("ACP routing failed: %s", exc)
                    return self._answer_error(cid, _error(-32603, f"Routing failed: {exc}"))
                if agent is None:
                    return self._answer_error(cid, _error(-32602, "No agent chosen for this session: pass "
                                                                  "--agent or mark one agent `default: true`."))
            if agent is None:
                return self._answer_error(cid, _error(-32602, "No agent chosen: pass --agent or mark one "
                                                              "agent `default: true`."))
            ctx.agent = agent
            raw_sid = None
        else:
            parsed = self._parse_sid(client_sid)
            if parsed is None:
                return self._answer_error(cid, _error(-32602, f"Unknown session id {client_sid!r}."))
            agent, generation, raw_sid = parsed
            link = self._links.get(agent)
            # A session of an earlier life of the agent is gone, unless the client asks to load it again.
            if method != "session/load" and not self._owns(link, generation, raw_sid, client_sid):
                return self._answer_error(cid, _error(-32603, f"Session {client_sid!r} ended: agent {agent!r} "
                                                              "is no longer running it.", {"agent": agent}))
            ctx = ACPRequestContext(method, params, agent, client_sid)
        denial = self._pre_request(ctx)
        if denial is not None:
            self.runtime.count(ctx.agent, "denied")
            return self._answer_error(cid, denial)
        forward = dict(params)
        if raw_sid is not None:
            forward["sessionId"] = raw_sid
        self._with_agent(ctx.agent, cid, method, lambda link: self._forward(link, cid, method, forward, ctx))

    def _initialize(self, cid: Any, params: Dict[str, Any]) -> None:
        self._client_init = dict(params)
        if self.initial is None:
            # No agent yet (route hooks choose per session): answer for the gateway itself.
            # Version 1 is the only one (acp.md §3: answer the client's if supported, else our latest).
            self.out.send({"jsonrpc": "2.0", "id": cid, "result": {
                "protocolVersion": 1, "agentCapabilities": {}, "authMethods": [],
                "agentInfo": {"name": "routeplane", "version": _version()}}})
            return
        # The chosen agent's own answer (its capabilities), unchanged.
        self._with_agent(self.initial, cid, "initialize",
                         lambda link: self._relay_answer(cid, link, link.init_result or {}))

    def _relay_answer(self, cid: Any, link: AgentProcess, result: Any) -> None:
        self.out.send({"jsonrpc": "2.0", "id": cid, "result": result})

    def _route(self, ctx: ACPRequestContext) -> Optional[str]:
        target = ACPTarget(ctx.agent) if ctx.agent else ACPTarget("")
        for hook in self.runtime.route:
            target = hook.resolve(target, ctx)
            if not isinstance(target, ACPTarget):
                raise TypeError(f"{type(hook).__name__}.resolve() must return an ACPTarget")
        if not target.agent:
            return None
        if target.agent not in self.runtime.agents:
            raise ValueError(f"a route hook chose agent {target.agent!r}, which is not configured")
        return target.agent

    def _pre_request(self, ctx: ACPRequestContext) -> Optional[Dict[str, Any]]:
        for hook in self.runtime.pre_request:
            try:
                decision = hook.check(ctx)
            except Exception:
                log.exception("ACP pre-request hook %s failed (request denied)", type(hook).__name__)
                return _error(-32603, "The request could not be checked.")
            if not isinstance(decision, ACPDecision):
                # A hook falling off the end of check() (None) was read as allow: fail closed, as when it raises.
                log.error("ACP pre-request hook %s returned %s, not an ACPDecision (request denied)",
                          type(hook).__name__, type(decision).__name__)
                return _error(-32603, "The request could not be checked.")
            if not decision.allowed:
                return _error(decision.code, decision.message, decision.data)
        return None

    def _forward(self, link: AgentProcess, cid: Any, method: str, params: Dict[str, Any],
                 ctx: ACPRequestContext) -> None:
        capabilities = (link.init_result or {}).get("agentCapabilities")
        if method == "session/load" and not (isinstance(capabilities, dict) and capabilities.get("loadSession")):
            return self._answer_error(cid, _error(-32601, f"Agent {link.name!r} does not support session/load."))
        started = time.monotonic()
        if method == "session/load" and ctx.session_id is not None:
            # A session of an earlier life (of this agent or of routeplane) keeps the id the client knows.
            link.loaded[params["sessionId"]] = ctx.session_id

        def reply(message: Dict[str, Any]) -> None:
            answer: Dict[str, Any] = {"jsonrpc": "2.0", "id": cid}
            if "error" in message:
                answer["error"] = _agent_error(message["error"], link.name)
                if method == "session/load":
                    link.loaded.pop(params["sessionId"], None)
            else:
                answer["result"] = self._rewrite_result(link, method, message.get("result"))
            if method == "session/prompt":
                try:  # bookkeeping: whatever the agent answered, the editor still gets the answer
                    self._turn_ended(link, ctx, answer, time.monotonic() - started)
                except Exception:
                    log.exception("recording a turn of agent %s failed", link.name)
            self.out.send(answer)

        link.request(method, params, reply)

    def _rewrite_result(self, link: AgentProcess, method: str, result: Any) -> Any:
        if not isinstance(result, dict):
            return result
        if method in _NEW_SESSION_METHODS and isinstance(result.get("sessionId"), str):
            result = dict(result, sessionId=link.client_sid(result["sessionId"]))
        if method == "session/list" and isinstance(result.get("sessions"), list):
            result = dict(result, sessions=[
                dict(s, sessionId=link.client_sid(s["sessionId"]))
                if isinstance(s, dict) and isinstance(s.get("sessionId"), str) else s
                for s in result["sessions"]])
        return result

    def _turn_ended(self, link: AgentProcess, ctx: ACPRequestContext, message: Mapping[str, Any],
                    seconds: float) -> None:
        result = message.get("result") if isinstance(message.get("result"), dict) else {}
        error = message.get("error") if isinstance(message.get("error"), dict) else None
        stop_reason = result.get("stopReason")
        event = ACPTurnEvent(  # a stopReason that is not a string (an object, a list) counts as "unknown"
            agent=link.name, session_id=ctx.session_id or "",
            stop_reason=stop_reason if isinstance(stop_reason, str) else None,
            latency_ms=round(seconds * 1000.0, 3), error=str(error.get("message")) if error else None,
            error_code=error.get("code") if error else None, usage=result.get("usage"))
        self.runtime.record_turn(event)
        log.info("acp turn agent=%s session=%s stop_reason=%s latency_ms=%.1f%s", event.agent, event.session_id,
                 event.stop_reason, event.latency_ms, f" error={event.error_code}" if error else "")

    def _client_notification(self, method: str, params: Dict[str, Any]) -> None:
        sid = params.get("sessionId") if isinstance(params, dict) else None
        if isinstance(sid, str):
            parsed = self._parse_sid(sid)
            if parsed is None:
                return
            agent, generation, raw = parsed
            link = self._links.get(agent)
            if self._owns(link, generation, raw, sid):
                link.send({"jsonrpc": "2.0", "method": method, "params": dict(params, sessionId=raw)})
        elif self.initial in self._links:  # unknown `_` extension notifications: the agent may ignore them
            self._links[self.initial].send({"jsonrpc": "2.0", "method": method, "params": params})

    def _client_answer(self, message: Dict[str, Any]) -> None:
        """The editor's answer to a request an agent made: back to that agent with the agent's id."""
        with self._lock:
            entry = self._to_client.pop(message.get("id"), None) if isinstance(message.get("id"), int) else None
        if entry is None:
            return  # its agent died meanwhile, or a stray answer
        link, agent_id = entry
        answer = {"jsonrpc": "2.0", "id": agent_id}
        answer.update({k: message[k] for k in ("result", "error") if k in message})
        link.send(answer)

    # --- agent side ----------------------------------------------------------

    def _on_agent_message(self, link: AgentProcess, message: Dict[str, Any]) -> None:
        if not isinstance(message.get("method"), str) or not message["method"]:
            # Neither an answer (AgentProcess took those) nor a request or notification: the editor
            # would get `"method": null`, which is not JSON-RPC.
            log.warning("agent %s wrote a message that is not JSON-RPC (ignored)", link.name)
            return
        params = message.get("params")
        if isinstance(params, dict) and isinstance(params.get("sessionId"), str):
            params = dict(params, sessionId=link.client_sid(params["sessionId"]))
        out: Dict[str, Any] = {"jsonrpc": "2.0", "method": message.get("method")}
        if params is not None:
            out["params"] = params
        if "id" in message:  # session/request_permission, fs/*, terminal/*: ids in the gateway's space
            with self._lock:
                gid = next(self._ids)
                self._to_client[gid] = (link, message["id"])
            out["id"] = gid
        self.out.send(out)

    def _on_agent_exit(self, link: AgentProcess, code: Optional[int]) -> None:
        with self._lock:
            for gid in [g for g, (lk, _aid) in self._to_client.items() if lk is link]:
                del self._to_client[gid]
            waiters, link.waiters = link.waiters, []
        if not self._closing:
            self.runtime.count(link.name, "exited")
            log.warning("agent %s exited (code %s)", link.name, code)
        for _then, fail in waiters:
            fail(link.death_error("initialize"))

    # --- agent lifecycle -----------------------------------------------------

    def _with_agent(self, name: str, cid: Any, method: str, then: Callable[[AgentProcess], None]) -> None:
        """Run `then(link)` once the agent is started and initialized; else answer the client's error."""
        def fail(error: Mapping[str, Any]) -> None:
            self._answer_error(cid, dict(error))

        with self._lock:
            link = self._links.get(name)
            if link is None or link.dead:
                generation = self._generations.get(name, 0) + 1
                try:
                    env = agent_environment(self.runtime.agents[name], self._listen, self._env)
                except ValueError as exc:
                    return fail(_error(-32603, f"Agent {name!r} cannot start: {exc}"))
                link = AgentProcess(self.runtime.agents[name], env, generation, self._on_agent_message,
                                    self._on_agent_exit)
                try:
                    link.start()
                except OSError as exc:
                    return fail(_error(-32603, f"Agent {name!r} cannot start: {exc.strerror or exc}"))
                self._generations[name], self._links[name] = generation, link
            if link.init_result is not None:
                ready = True
            else:
                ready = False
                link.waiters.append((lambda: then(link), fail))
                start_init, link.initializing = not link.initializing, True
        if ready:
            return then(link)
        if start_init:
            init = self._client_init or {"protocolVersion": 1, "clientCapabilities": {}}
            timer = threading.Timer(link.agent.startup_timeout_seconds, self._startup_timed_out, (link,))
            timer.daemon = True
            timer.start()
            link.request("initialize", init, lambda message: (timer.cancel(), self._initialized(link, message)))

    def _startup_timed_out(self, link: AgentProcess) -> None:
        """An agent silent past `startup_timeout_seconds` is stopped; its waiters get the reason."""
        if link.init_result is None and not link.dead:
            link.failure = (f"did not answer initialize within {link.agent.startup_timeout_seconds:g} s "
                            "(agents.<name>.startup_timeout_seconds)")
            log.error("agent %s %s", link.name, link.failure)
            link.kill()

    def _initialized(self, link: AgentProcess, message: Dict[str, Any]) -> None:
        with self._lock:
            if "result" in message and isinstance(message["result"], dict):
                link.init_result = message["result"]
            waiters, link.waiters = link.waiters, []
        if link.init_result is None and not link.dead:
            # An agent that refused initialize is of no use: stop it, so that the next request starts it
            # afresh (kept, it stayed "initializing" and every later request waited forever).
            reason = _agent_error(message.get("error"), link.name)["message"] if "error" in message else "no result"
            link.failure = f"failed to initialize ({reason[:300]})"
            link.kill()
        for then, fail in waiters:
            if link.init_result is not None:
                then()
            elif "error" in message:
                fail(_agent_error(message["error"], link.name))
            else:
                fail(_error(-32603, f"Agent {link.name!r} failed to initialize (its answer has no result object)."))

    @staticmethod
    def _owns(link: Optional[AgentProcess], generation: int, raw_sid: str, client_sid: str) -> bool:
        """The live process runs this session: its own generation, or it loaded the session under that id."""
        return (link is not None and not link.dead
                and (link.generation == generation or link.loaded.get(raw_sid) == client_sid))

    def _parse_sid(self, client_sid: str) -> Optional[Tuple[str, int, str]]:
        head, sep, raw = client_sid.partition(_SEP)
        name, _, gen = head.partition("~")
        if not sep or name not in self.runtime.agents:
            return None
        try:
            generation = int(gen) if gen else 1
        except ValueError:
            return None
        return name, generation, raw

    @property
    def closing(self) -> bool:
        """close() has begun (it stops every agent)."""
        return self._closing

    def close(self) -> None:
        if self._closing:  # once: the end of stdin and a signal may both get here
            return
        self._closing = True
        for link in list(self._links.values()):
            link.close()
        self.runtime.close()


def _version() -> str:
    try:
        from importlib import metadata

        return metadata.version("routeplane")
    except Exception:
        return "0"

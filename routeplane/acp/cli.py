"""The `routeplane acp` subcommand: serve ACP on stdio, relaying to a configured agent (or print a card)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any


def add_commands(sub: Any) -> None:
    acp = sub.add_parser("acp", help="an ACP agent on stdin/stdout that relays to the agents under `agents:`")
    acp.add_argument("--agent", help="the agent to relay to (default: the one with `default: true`, or the only one)")
    acp.add_argument("--config", help="config file (default: $ROUTEPLANE_CONFIG, ./routeplane.yaml, built-in)")
    acp.add_argument("--card", action="store_true",
                     help="print the canonical bytes of the agent's card (what `signature` must sign) and exit")
    acp.set_defaults(func=cmd_acp)


def cmd_acp(args: argparse.Namespace) -> int:
    from ..app import build_app
    from ..config import ConfigError, load_config
    from ..logs import configure_logging
    from .cards import agent_card, canonical_bytes
    from .relay import ACPRelay
    from .settings import default_agent

    # stdout carries the protocol only: keep a private handle on it and point fd 1 (and print) at stderr.
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    path = args.config or os.environ.get("ROUTEPLANE_CONFIG") or None
    try:
        config = load_config(path)
        configure_logging(config.server.log_level)
        app = build_app(config)
    except ConfigError as exc:
        print(f"routeplane: {exc}", file=sys.stderr)
        return 2
    agents = config.agents
    if not agents:
        print(f"routeplane: {config.source}: no agents configured (add an `agents:` section)", file=sys.stderr)
        return 2
    if args.agent is not None and args.agent not in agents:
        print(f"routeplane: {config.source}: no agent {args.agent!r} under agents: (configured: "
              f"{sorted(agents)})", file=sys.stderr)
        return 2
    chosen = args.agent or default_agent(agents)
    if args.card:
        if chosen is None:
            print("routeplane: --card needs --agent (no default agent)", file=sys.stderr)
            return 2
        protocol_out.write(canonical_bytes(agent_card(agents[chosen])) + b"\n")
        return 0
    relay = ACPRelay(app.acp, chosen, protocol_out, os.environ, config.server.listen)
    _stop_on_signals(relay)
    try:
        relay.run(sys.stdin.buffer)
    except KeyboardInterrupt:
        relay.close()
    finally:
        app.shutdown()
    return 0


def _stop_on_signals(relay: Any) -> None:
    """SIGTERM / SIGHUP (an editor stopping its agent server, a closed terminal) end the relay like
    the end of stdin: each agent is stopped. Left to their default, routeplane died at once and
    agents that do not exit on EOF kept running, orphaned.

    Once: a signal while the relay is already closing (an editor closes stdin and sends SIGTERM at
    once, or sends it twice) is ignored. Raised inside close()'s wait on an agent, it cut the shutdown
    short, and the second close() returns at once: the agents not yet stopped were orphaned."""
    def stop(signum: int, _frame: Any) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if not relay.closing:
            raise KeyboardInterrupt(signal.Signals(signum).name)

    if threading.current_thread() is threading.main_thread():  # signal.signal() works there only
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, stop)

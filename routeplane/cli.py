"""The `routeplane` command: serve, check, and more as issues add them."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Callable, List, Optional

from .config import ConfigError, listen_problem, load_config


def _is_loopback(listen: str) -> bool:
    """Whether only this host can reach `listen`: a loopback address, or a Unix socket (nginx on the same
    host, the documented deployment). An inherited socket (fd://) is unknown, so it is not."""
    if listen.startswith("unix:"):
        return True
    if listen.startswith("tcp://"):
        listen = listen[len("tcp://"):]
    host = listen.rpartition(":")[0].strip("[]") or "127.0.0.1"
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    args.config = args.config or os.environ.get("ROUTEPLANE_CONFIG") or None
    try:
        config = load_config(args.config)
        from .app import build_app

        # Plugins load and install here first: one that cannot (bad options, a hook of another pipeline)
        # stops serve with its message, instead of every gunicorn worker failing to boot with a traceback.
        build_app(config)
    except ConfigError as exc:
        print(f"routeplane: {exc}", file=sys.stderr)
        return 2
    # The gunicorn settings read ROUTEPLANE_LISTEN (docs/configuration.md): honoured here too, and
    # checked like --listen, instead of being overwritten with the config's address.
    listen = args.listen or os.environ.get("ROUTEPLANE_LISTEN") or config.server.listen
    problem = listen_problem(listen)
    if problem:
        origin = "--listen" if args.listen else "ROUTEPLANE_LISTEN"  # the config's was checked on load
        print(f"routeplane: {origin}: {problem}", file=sys.stderr)
        return 2
    if (config.auth.get("mode", "none") == "none" and not _is_loopback(listen)
            and not config.server.allow_non_loopback_without_auth):
        print(f"routeplane: refusing to listen on {listen} with auth.mode none; set server."
              "allow_non_loopback_without_auth: true to override", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.config:
        env["ROUTEPLANE_CONFIG"] = os.path.abspath(args.config)
    env["ROUTEPLANE_LISTEN"] = listen
    if args.workers:
        env["ROUTEPLANE_WORKERS"] = str(args.workers)
    if args.threads:
        env["ROUTEPLANE_THREADS"] = str(args.threads)
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:routeplane.gunicorn_conf"]
    print(f"routeplane: serving {config.source} on http://{listen}", file=sys.stderr)
    os.execvpe(argv[0], argv, env)
    return 0  # pragma: no cover


def cmd_check(args: argparse.Namespace) -> int:
    from .store.database import StoreError

    if args.config_file and args.config and args.config_file != args.config:
        print("routeplane: check: give the config file once (FILE or --config)", file=sys.stderr)
        return 2
    # The file serve and migrate would load: FILE, else $ROUTEPLANE_CONFIG, ./routeplane.yaml, built-in.
    path = args.config_file or args.config or os.environ.get("ROUTEPLANE_CONFIG") or None
    try:
        config = load_config(path)
        from .app import build_app

        app = build_app(config)  # plugins load and validate their options too
        if app.store is not None:
            # What serve checks before it migrates: table ownership and the SQL rules of every
            # plugin migration (a HUP's pre-check is this command: it must refuse what serve would).
            from .store.migrations import MigrationError, plugin_migrations

            app.store.database  # noqa: B018 - the driver and URL options, checked without connecting
            try:
                plugin_migrations(app.plugins, app.store.dialect)
            except MigrationError as exc:
                raise ConfigError(f"{config.source}: plugin migrations: {exc}") from None
    except StoreError as exc:  # database.url: a scheme or option the store refuses (the store is not opened)
        print(f"routeplane: {config.source}: database.url: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"routeplane: {exc}", file=sys.stderr)
        return 1
    # The plugins that will run, the built-in ones included (auth, budget, spend_log): the config's
    # `plugins:` section alone read "0 plugins" for a file that turns auth and budgets on.
    installed = ", ".join(str(plugin.id) for plugin in app.plugins) or "none"
    print(f"{config.source}: OK ({len(config.providers)} providers, {len(config.routes)} routes, "
          f"plugins: {installed})")
    return 0


def _count(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high], the bounds `server.workers`/`threads` have in the config
    (0 used to be ignored silently, and a value past them reached gunicorn unchecked)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routeplane", description="A programmable router for LLM API traffic.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway under gunicorn")
    serve.add_argument("--config", help="config file (default: $ROUTEPLANE_CONFIG, ./routeplane.yaml, built-in)")
    serve.add_argument("--listen", help="HOST:PORT (default: $ROUTEPLANE_LISTEN, else the config's server.listen, "
                                        "127.0.0.1:4356)")
    serve.add_argument("--workers", type=_count(1, 256), help="gunicorn worker processes (1-256)")
    serve.add_argument("--threads", type=_count(1, 4096), help="threads per worker, one per open stream (1-4096)")
    serve.set_defaults(func=cmd_serve)
    check = sub.add_parser("check", help="validate a config file (and load its plugins)")
    check.add_argument("config_file", nargs="?", metavar="FILE",
                       help="config file (default: $ROUTEPLANE_CONFIG, ./routeplane.yaml, built-in)")
    check.add_argument("--config", help="the same, as serve and migrate take it")
    check.set_defaults(func=cmd_check)
    from .cli_plugins import add_commands as add_plugin_commands

    add_plugin_commands(sub)
    from .store.commands import add_parsers as add_store_commands

    add_store_commands(sub)  # migrate, spend
    from .auth.cli import add_commands as add_auth_commands

    add_auth_commands(sub)  # token, keys
    from .acp.cli import add_commands as add_acp_commands

    add_acp_commands(sub)  # acp
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`routeplane plugins | head -3`): stop quietly, as other commands in a pipe
        # do, instead of a traceback. stdout goes to /dev/null so the flush at exit cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

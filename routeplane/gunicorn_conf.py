"""gunicorn settings for routeplane (gthread workers); `routeplane serve` and ./gunicorn.conf.py use them.

Sizing: one gthread thread holds one open stream for its whole life, so the
number of concurrent streams a box holds is workers × threads. Streams are
I/O-bound (a thread waits on the upstream socket), so a large thread count
per worker is cheap: see docs/deploy.md for measured numbers.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any, Dict, Iterator, Optional, Tuple

import yaml

from routeplane import import_paths
from routeplane.config import (
    DEFAULT_CONFIG,
    SOURCE_ENV,
    ConfigError,
    listen_problem,
    load_config,
    parse_config_bytes,
    read_config_file,
)
from routeplane.worker_memory import DEFAULT_MB as MEMORY_DEFAULT_MB
from routeplane.worker_memory import ENV as MEMORY_ENV


def _config_file() -> Optional[str]:
    """The operator's config file: $ROUTEPLANE_CONFIG as given at start, else ./routeplane.yaml if it exists now."""
    if _config_path:
        return os.path.abspath(_config_path)
    return os.path.abspath("routeplane.yaml") if os.path.exists("routeplane.yaml") else None


def _read_source() -> Tuple[bytes, str]:
    """The config's bytes and its name in messages: the operator's file, else the built-in defaults as YAML."""
    path = _config_file()
    if path is None:
        return yaml.safe_dump(DEFAULT_CONFIG).encode("utf-8"), "<built-in defaults>"
    return read_config_file(path), path


_config_path = os.environ.get("ROUTEPLANE_CONFIG") or None
try:  # read once: what is checked here is what the workers get (the snapshot, see on_starting)
    _start_bytes, _start_name = _read_source()
    _config = parse_config_bytes(_start_bytes, _start_name)
except ConfigError as _exc:  # fail in the master, before any worker starts
    raise SystemExit(f"routeplane: {_exc}") from None

def _env_int(name: str, default: int, low: int, high: int) -> int:
    """$name as a whole number in [low, high], else `default`; a bad value stops the start naming it
    (int() said only "invalid literal for int() with base 10: '1.5'")."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise SystemExit(f"routeplane: {name} must be a whole number from {low} to {high}, not {raw!r}")
    return value


def _env_listen() -> str:
    listen = os.environ.get("ROUTEPLANE_LISTEN") or _config.server.listen
    problem = listen_problem(listen)
    if problem:
        raise SystemExit(f"routeplane: ROUTEPLANE_LISTEN: {problem}")
    return listen


bind = [_env_listen()]
workers = _env_int("ROUTEPLANE_WORKERS", _config.server.workers, 1, 256)
threads = _env_int("ROUTEPLANE_THREADS", _config.server.threads, 1, 4096)
# gthread, serving a busy kept-alive connection's next request in the same
# thread instead of handing it back to the poller (routeplane/gunicorn_worker.py).
worker_class = "routeplane.gunicorn_worker.ThreadWorker"
# Header bounds (config `limits`); gunicorn answers 400 past them, before the app runs.
limit_request_line = _config.limits.max_request_line_bytes
limit_request_field_size = _config.limits.max_header_bytes
limit_request_fields = _config.limits.max_headers
# gthread workers heartbeat from their main loop, so a long stream does not trip this.
timeout = 60
# SIGTERM/HUP: a worker stops accepting and lets open requests and streams
# finish for this long; streams still open near the end are closed with an
# error event and settled (see post_worker_init), before the master's SIGKILL.
graceful_timeout = _env_int("ROUTEPLANE_GRACEFUL_TIMEOUT", 30, 1, 86400)
# How long a stopping worker keeps idle keep-alive connections (gthread: 2 s); only ever shorter.
_linger = os.environ.get("ROUTEPLANE_STOP_KEEPALIVE_LINGER")
try:
    _linger_ok = not _linger or 0 <= float(_linger) < float("inf")
except ValueError:
    _linger_ok = False
if not _linger_ok:
    raise SystemExit(f"routeplane: ROUTEPLANE_STOP_KEEPALIVE_LINGER must be a number of seconds >= 0, not {_linger!r}")
keepalive = 5
# Recycle each worker after about this many requests (a slow leak in a plugin
# or a library cannot grow forever); the jitter keeps workers from recycling
# together. A recycled worker drains like a SIGTERM'd one. 0 turns it off.
max_requests = _env_int("ROUTEPLANE_MAX_REQUESTS", 20000, 0, 10**9)
max_requests_jitter = max(1, max_requests // 10) if max_requests else 0
# And recycle a worker whose resident memory passes this many MB (0 = off; routeplane/worker_memory.py):
# validated here, read by each worker.
_env_int(MEMORY_ENV, MEMORY_DEFAULT_MB, 0, 10**6)
# Not preloaded: HUP then re-reads the config and plugins in fresh workers.
preload_app = False
wsgi_app = "routeplane.app:create_app()"
accesslog = os.environ.get("ROUTEPLANE_ACCESS_LOG") or None
# gunicorn's default logs the request line with its query string, where a Gemini
# client may carry `?key=<api key>`: log the path only (%(U)s), never the query.
access_log_format = '%(h)s %(l)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s"'
errorlog = "-"
loglevel = _config.server.log_level
proc_name = "routeplane"
# gunicorn ≥ 26 opens a control socket at ~/.gunicorn/gunicorn.ctl, one path
# shared by every gunicorn of the user; routeplane is driven by signals only.
control_socket_disable = True


def on_starting(server) -> None:  # noqa: ANN001 - gunicorn hook signature
    server.log.info("routeplane: config %s, %d workers x %d threads", _config.source, workers, threads)
    # The workers load the bytes checked above, never the live file: an edit made since (not
    # reloaded yet) must not reach a worker started by a recycle or after a crash.
    _promote(_write_snapshot(_start_bytes), _start_name)
    server.log.info("routeplane: workers load the checked copy %s", os.environ["ROUTEPLANE_CONFIG"])
    migrate_store(server)


def on_reload(server) -> None:  # noqa: ANN001 - gunicorn hook signature
    _replacements.new_generation(server)
    # A plugin installed since start-up (`pip install -e` adds a .pth file): the new
    # workers are forked from this process, so it must be importable here first.
    try:
        added = import_paths.WATCH.refresh()
    except Exception as exc:  # never the reason a reload stops the server
        server.log.error("routeplane: reading new .pth files failed: %s", exc)
        added = []
    if added:
        server.log.info("routeplane: new import paths from %s", ", ".join(added))
    # A broken file must not reach the new workers: one that fails to boot
    # makes gunicorn halt the whole server. Checked first, in a child process,
    # then its store migrated; either failing keeps the previous config.
    check_reloaded_config(server)


# Snapshots of the config, in a private directory made by this master (mode 0700),
# never a predictable shared path: a copy may hold literal keys, and a file planted
# there would be loaded. CANDIDATE is being checked; SERVING passed and is what
# $ROUTEPLANE_CONFIG points every worker at (new, recycled or respawned).
CANDIDATE, SERVING = "candidate.yaml", "serving.yaml"
_private_dir: list = []


def _snapshot_path(name: str) -> str:
    import tempfile

    if not _private_dir:
        _private_dir.append(tempfile.mkdtemp(prefix="routeplane-"))
    return os.path.join(_private_dir[0], name)


def _write_snapshot(data: bytes) -> str:
    """The config's bytes as the candidate snapshot (mode 0600); its path."""
    target = _snapshot_path(CANDIDATE)
    fd = os.open(target + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as dst:
        dst.write(data)
    os.replace(target + ".tmp", target)
    return target


def _promote(candidate: str, name: str) -> None:
    """The checked candidate becomes what the workers load (atomically: a worker booting now reads one or the other).

    Only $ROUTEPLANE_CONFIG changes where the workers look; relative paths in the file
    (sqlite:///routeplane.db) stay relative to the working directory, as before.
    """
    serving = _snapshot_path(SERVING)
    os.replace(candidate, serving)
    os.environ["ROUTEPLANE_CONFIG"] = serving
    os.environ[SOURCE_ENV] = name


def check_reloaded_config(server) -> None:  # noqa: ANN001
    """Check the config file (`routeplane check`, plugins included) and migrate its store, in child processes.

    The file's bytes are copied first, and the copy is what is checked, migrated and, if it
    passed, handed to the workers: an edit landing during or after the check never reaches
    a worker unchecked. With no file (./routeplane.yaml absent and $ROUTEPLANE_CONFIG unset at
    start) the candidate is the built-in defaults. Bad (the file cannot be read, the check
    fails, or its store cannot be opened or migrated: a typo in database.url, PostgreSQL down
    for a moment): the error is logged and the workers keep loading the previous snapshot,
    so the gateway keeps serving the previous config instead of halting. Its store was
    migrated when it was accepted; if that one is down too, the workers start anyway and
    wait for it (routeplane/store/migrations.py: prepare_for_serving).
    """
    try:
        data, name = _read_source()
        candidate = _write_snapshot(data)
    except (ConfigError, OSError) as exc:
        server.log.error("routeplane: reload: %s, keeping the previous config", exc)
        return
    env = dict(os.environ, ROUTEPLANE_CONFIG=candidate, **{SOURCE_ENV: name})
    ok, output = _run_cli(["check", candidate], env, "ROUTEPLANE_CHECK_TIMEOUT", 120, "routeplane check")
    if ok:
        migrated, migrate_output = _migrate(candidate, name)
        if not migrated:
            ok, output = False, f"its store cannot be opened or migrated:\n{migrate_output}"
        elif migrate_output:
            output = f"{output}\n{migrate_output}"
    if ok:
        _promote(candidate, name)
        server.log.info("routeplane: reload: %s", output)
        return
    try:
        os.unlink(candidate)
    except OSError:
        pass
    server.log.error("routeplane: reload: %s is invalid, keeping the previous config:\n%s", name, output)


def _run_cli(args: list, env: dict, timeout_env: str, timeout: float, what: str) -> Tuple[bool, str]:
    """`python -m routeplane.cli ARGS` in a child process: (exit status 0, its output)."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "routeplane.cli", *args]
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=env, timeout=float(os.environ.get(timeout_env) or timeout))
    except subprocess.TimeoutExpired:
        return False, f"{what} did not finish in time ({timeout_env})"
    return proc.returncode == 0, proc.stdout.decode("utf-8", "replace").strip()


def _migrate(path: str, name: str) -> Tuple[bool, str]:
    """`routeplane migrate --quiet` for the config snapshot at `path` (`name`: its file), if it has a store."""
    try:
        config = load_config(path, source=name)
    except ConfigError as exc:
        return False, f"routeplane: {exc}"
    if not config.database_url:
        return True, ""
    # The workers forked from here verify, never migrate (one that cannot reach the store waits for it).
    os.environ["ROUTEPLANE_MIGRATED"] = "1"
    env = dict(os.environ, ROUTEPLANE_CONFIG=path, **{SOURCE_ENV: name})
    return _run_cli(["migrate", "--quiet"], env, "ROUTEPLANE_MIGRATE_TIMEOUT", 300, "migrations")


def migrate_store(server) -> None:  # noqa: ANN001
    """Apply pending migrations once at start, before any worker forks (workers only verify).

    Runs `routeplane migrate` in a child process, so the master never holds a
    database connection (workers would inherit it) nor imports plugin code
    (HUP re-imports it in fresh workers). A failure stops the server: at
    first start there is no previous config to keep serving.
    """
    ok, output = _migrate(_snapshot_path(SERVING), _start_name)
    if not ok:
        _remove_snapshots()  # gunicorn runs no on_exit for a start that fails here
        raise SystemExit(f"routeplane: migrations failed, not starting:\n{output}")
    for line in output.splitlines():
        server.log.info("routeplane: %s", line)


def _routeplane_app(worker: Any) -> Optional[Any]:
    return getattr(getattr(worker, "wsgi", None), "extensions", {}).get("routeplane")


def close_margin(graceful: float) -> float:
    """Seconds before graceful_timeout at which open streams are told to end (time to settle and exit).

    A stream ends at its next upstream part; its keep-alive connection then
    lingers up to gthread's STOP_KEEPALIVE_LINGER (2 s) before the worker can
    exit, plus settlement and shutdown callbacks: at least 4 s, at most 5 s.
    """
    return min(5.0, max(4.0, graceful * 0.2))


def post_worker_init(worker) -> None:  # noqa: ANN001 - gunicorn hook signature
    """Chain the worker's SIGTERM handler: start draining (/ready → 503) and schedule closing open streams."""
    app = _routeplane_app(worker)
    if _private_dir:  # started by this file's on_starting (not a bare import of the settings)
        worker.on_recycle = announce_recycle if RECYCLE_SIGNAL else None
        if app is not None:
            app.lifecycle.server_stopping = _server_stopping
    if app is None:
        return
    previous = signal.getsignal(signal.SIGTERM)
    graceful = float(worker.cfg.graceful_timeout)

    def on_sigterm(sig: int, frame: Any) -> None:
        app.lifecycle.begin_drain(close_after=graceful - close_margin(graceful))
        if callable(previous):
            previous(sig, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)


# Recycling (max_requests) without a gap: the retiring worker leaves a marker in the private
# directory and signals the master, which starts its replacement now instead of after the exit
# (routeplane/gunicorn_worker.py). The marker, not the signal, is the message; the master's
# _Replacements is the record: a marker is counted once, and child_exit undoes exactly what was
# counted, whichever comes first.
# No real-time signals (macOS): recycling is gunicorn's own, the replacement starting after the exit.
RECYCLE_SIGNAL = getattr(signal, "SIGRTMIN", None) and signal.SIGRTMIN + 5
_RECYCLING = "recycling-"

# Written by the master when SIGTERM stops the whole server: a worker drained by a HUP (replaced,
# the server keeps running) finds none, and its /ready keeps saying ready (routeplane/lifecycle.py).
STOPPING = "stopping"


def when_ready(server) -> None:  # noqa: ANN001 - gunicorn hook signature (master, after its own signal handlers)
    # An exception escaping a master signal handler reaches gunicorn's main loop, which stops
    # the server at once: these handlers log an OSError (/tmp cleaned under us) and go on.
    if RECYCLE_SIGNAL:
        signal.signal(RECYCLE_SIGNAL, lambda _sig, _frame: _start_replacements(server))
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(sig: int, frame: Any) -> None:
        try:
            os.close(os.open(_snapshot_path(STOPPING), os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as exc:  # the workers' /ready then keeps saying ready while they drain
            server.log.error("routeplane: cannot mark the server as stopping: %s", exc)
        finally:
            if callable(previous):
                previous(sig, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def _server_stopping() -> bool:
    """In a worker: whether the master is stopping (or gone), not merely replacing this worker."""
    return os.path.exists(_snapshot_path(STOPPING)) or not os.path.isdir(_snapshot_path(""))


def announce_recycle(worker: Any) -> None:
    """In a worker that max_requests retires: ask the master for its replacement now."""
    fd = os.open(_snapshot_path(f"{_RECYCLING}{worker.pid}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    os.kill(worker.ppid, RECYCLE_SIGNAL)


class _Replacements:
    """The master's record of the retiring workers it added a slot for: pid → generation (one per HUP).

    A HUP (gunicorn's setup()) resets num_workers to the setting, dropping every slot added
    before it; so child_exit gives a slot back only for a worker counted in the current
    generation, whatever TTIN/TTOU did to the count meanwhile.
    """

    def __init__(self) -> None:
        self.generation = 0
        self.counted: Dict[int, int] = {}

    def count(self, server: Any, pid: int) -> None:
        if pid not in self.counted:
            self.counted[pid] = self.generation
            server.num_workers += 1

    def settle(self, server: Any, pid: int) -> None:
        if self.counted.pop(pid, None) == self.generation:
            server.num_workers = max(1, server.num_workers - 1)  # as TTOU: never below one worker

    def new_generation(self, server: Any) -> None:
        """On HUP (on_reload runs after setup() reset the count): what was counted before is dropped.

        A recycle counted between that reset and this hook is in the count already: the
        excess over the setting is those last counts, and they stay current.
        """
        with _recycle_signal_held():
            excess = max(0, server.num_workers - server.cfg.workers)
            kept = list(self.counted)[-excess:] if excess else []
            self.generation += 1
            for pid in kept:
                self.counted[pid] = self.generation


_replacements = _Replacements()


@contextlib.contextmanager
def _recycle_signal_held() -> Iterator[None]:
    """The recycle handler (which adds to num_workers) waits while the main loop changes the count:
    an increment landing inside `num_workers -= 1` would be lost."""
    if not RECYCLE_SIGNAL:
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {RECYCLE_SIGNAL})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _start_replacements(server) -> None:  # noqa: ANN001
    """In the master (the recycle signal's handler): one more worker per retiring worker not counted yet."""
    try:
        names = os.listdir(_snapshot_path(""))
    except OSError as exc:  # the private directory is gone (/tmp cleaned): replaced after their exit
        server.log.error("routeplane: cannot read the recycle markers: %s", exc)
        names = []
    for name in names:
        if name.startswith(_RECYCLING) and name[len(_RECYCLING):].isdigit():
            _replacements.count(server, int(name[len(_RECYCLING):]))
    server.wakeup()


def child_exit(server, worker) -> None:  # noqa: ANN001 - gunicorn hook signature (master)
    """A retired worker has exited: give back the extra slot its replacement took, if it was counted."""
    with _recycle_signal_held():
        try:
            os.unlink(_snapshot_path(f"{_RECYCLING}{worker.pid}"))  # the master will not count it any more
        except OSError:
            pass
        _replacements.settle(server, worker.pid)


def worker_exit(server, worker) -> None:  # noqa: ANN001 - gunicorn hook signature
    """Let plugins clean up (App.shutdown) when a worker stops."""
    app = _routeplane_app(worker)
    if app is not None:
        # The serving loop is over (drained, timed out, or recycled): a stream
        # still running ends at its next part, settled, instead of being cut.
        app.lifecycle.close_streams()
        app.shutdown()


def on_exit(server) -> None:  # noqa: ANN001 - gunicorn hook signature
    _remove_snapshots()


def _remove_snapshots() -> None:
    if _private_dir:
        import shutil

        shutil.rmtree(_private_dir.pop(), ignore_errors=True)

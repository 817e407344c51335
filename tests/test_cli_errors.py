"""`routeplane check` / `migrate` / `spend` on bad input: one `routeplane: ...` line and a non-zero exit, never a
traceback; and a read-only report never creates a database file."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Callable, Dict, Tuple

import pytest

from routeplane.cli import main
from routeplane.store.commands import parse_when

BASE = ("providers:\n  mock: {protocol: mock}\n"
        "models:\n  default: {targets: [{provider: mock, model: echo}]}\n")


@pytest.fixture(autouse=True)
def _no_routeplane_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for key in [k for k in os.environ if k.startswith("ROUTEPLANE_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def _write(tmp_path: Any, name: str, text: str) -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


def _junk(tmp_path: Any) -> str:
    return _write(tmp_path, "junk.txt", "this is not a database\n" * 10)


def _migrated(tmp_path: Any) -> str:
    url = f"sqlite:///{tmp_path}/rp.db"
    assert main(["migrate", "--quiet", "--database", url]) == 0
    return url


CASES: Dict[str, Tuple[Callable[[Any], Tuple[str, ...]], str]] = {
    "check a directory": (lambda t: ("check", str(t)), "is a directory"),
    "check an unsupported database scheme": (lambda t: (
        "check", _write(t, "scheme.yaml", BASE + "database: {url: 'foo://u:pw@h/x'}\n")), "unsupported scheme 'foo'"),
    # An unbalanced IPv6 bracket: urlsplit's ValueError("Invalid IPv6 URL") was a 27-line traceback.
    "check an unbalanced IPv6 bracket": (lambda t: (
        "check", _write(t, "ipv6.yaml", BASE + "database: {url: 'postgresql://u:pw@[::1/db'}\n")), "cannot be parsed"),
    "migrate --database an unbalanced IPv6 bracket": (
        lambda t: ("migrate", "--database", "postgresql://u:pw@[::1/db"), "cannot be parsed"),
    "spend --database an unbalanced IPv6 bracket": (
        lambda t: ("spend", "--database", "mysql://u:pw@[::1/db"), "cannot be parsed"),
    "migrate --config a directory": (lambda t: ("migrate", "--config", str(t)), "is a directory"),
    "migrate a file that is not a database": (
        lambda t: ("migrate", "--database", f"sqlite:///{_junk(t)}"), "file is not a database"),
    "spend on a file that is not a database": (
        lambda t: ("spend", "--database", f"sqlite:///{_junk(t)}"), "file is not a database"),
    "spend --since far in the past": (
        lambda t: ("spend", "--database", _migrated(t), "--since", "10000000d"), "out of range"),
    "spend --since a pre-year-1 instant": (
        lambda t: ("spend", "--database", _migrated(t), "--since", "0001-01-01T00:00+01:00"), "out of range"),
    "spend --until past year 9999": (
        lambda t: ("spend", "--database", _migrated(t), "--until", "9999-12-31T23:59-01:00"), "out of range"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clean_line(tmp_path: Any, capsys: pytest.CaptureFixture, case: str) -> None:
    args, expected = CASES[case]
    argv = args(tmp_path)
    capsys.readouterr()
    code = main(list(argv))  # an uncaught exception here is the traceback the user would see
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("routeplane: ") and len(err.splitlines()) == 1, (code, err)
    assert expected in err and "pw" not in err


def test_check_refuses_store_options_it_can_see_without_connecting(tmp_path: Any, capsys: Any) -> None:
    path = _write(tmp_path, "opt.yaml", BASE + "database: {url: 'postgresql://u:pw@h/x?max_connections=many'}\n")
    assert main(["check", path]) == 1
    err = capsys.readouterr().err
    assert "max_connections must be an integer" in err and "pw" not in err


def test_spend_on_a_missing_sqlite_file_does_not_create_it(tmp_path: Any, capsys: Any) -> None:
    assert main(["spend", "--database", f"sqlite:///{tmp_path}/typo.db"]) == 1
    assert "no such database file" in capsys.readouterr().err
    assert not (tmp_path / "typo.db").exists(), "a read-only report created an empty database file"


def test_spend_reads_a_database_without_writing_to_it(tmp_path: Any, capsys: Any) -> None:
    import sqlite3

    url = _migrated(tmp_path)
    db = sqlite3.connect(tmp_path / "rp.db")
    db.execute("PRAGMA journal_mode=delete")  # the gateway's connections would switch it to WAL
    db.close()
    before = (tmp_path / "rp.db").read_bytes()
    assert main(["spend", "--database", url, "--since", "0001-01-01T01:00+01:00", "--json"]) == 0
    assert '"requests": 0' in capsys.readouterr().out
    assert (tmp_path / "rp.db").read_bytes() == before


def test_parse_when_range() -> None:
    assert parse_when("0001-01-01T01:00+01:00") == -62135596800.0
    for text in ("10000000d", "0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00"):
        with pytest.raises(ValueError, match="out of range"):
            parse_when(text)


def test_console_script_prints_no_traceback(tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEPLANE_")}
    p = subprocess.run([sys.executable, "-m", "routeplane.cli", "migrate", "--config", str(tmp_path)],
                       capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert p.returncode == 1 and "Traceback" not in p.stderr and p.stderr.startswith("routeplane: "), p.stderr

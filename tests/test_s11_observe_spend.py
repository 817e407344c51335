"""`routeplane spend` on SQLite and PostgreSQL: totals equal the spend log's rows; bad arguments are clear errors."""

from __future__ import annotations

import json
import uuid
from typing import Any, Iterator

import pytest

from routeplane.app import build_app
from routeplane.cli import main
from routeplane.config import parse_config


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/spend.db"
    else:
        yield request.getfixturevalue("postgres_cluster").create_database("spend_" + uuid.uuid4().hex[:12])


def spend(capsys: Any, *argv: str) -> Any:
    code = main(["spend", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_totals_equal_the_rows_for_every_grouping(database_url: str, capsys: Any) -> None:
    assert main(["migrate", "--database", database_url, "--quiet"]) == 0
    code, out, _err = spend(capsys, "--database", database_url, "--json")
    assert code == 0 and json.loads(out)["total"]["requests"] == 0  # an empty log is an empty report
    config = parse_config({
        "database": {"url": database_url},
        "providers": {"paid": {"protocol": "mock", "prices": {"input": 1.5, "output": 3.3}}, "free": {"protocol": "mock"}},
        "models": {"p": {"targets": [{"provider": "paid", "model": "echo"}]},
                   "f": {"targets": [{"provider": "free", "model": "echo"}]}},
    })
    app = build_app(config)
    client = app.flask_app().test_client()
    for i in range(9):
        for model in ("p", "f", "paid:fail-503", "nope", "paid:echo"):
            client.post("/v1/chat/completions", json={"model": model, "stream": i % 2 == 0,
                                                      "messages": [{"role": "user", "content": "hello " * i}]}).get_data()
    app.shutdown()
    rows = app.store.execute("SELECT outcome, input_tokens + cache_read_tokens + cache_write_tokens,"
                             " output_tokens + reasoning_tokens, cost_micro_usd FROM spend_log")
    expected = {"requests": len(rows), "failed": sum(r[0] != "success" for r in rows),
                "input_tokens": sum(r[1] for r in rows), "output_tokens": sum(r[2] for r in rows),
                "cost_micro_usd": sum(r[3] or 0 for r in rows), "unpriced_requests": sum(r[3] is None for r in rows)}
    assert expected["requests"] == 45 and expected["cost_micro_usd"] > 0 and expected["unpriced_requests"] > 0
    for by in ("account", "model", "provider", "route"):
        code, out, _err = spend(capsys, "--database", database_url, "--by", by, "--json")
        doc = json.loads(out)
        assert code == 0 and {k: doc["total"][k] for k in expected} == expected, by
        for k in expected:  # the lines add up to the total
            assert sum(r[k] for r in doc["rows"]) == expected[k], (by, k)
    code, out, _err = spend(capsys, "--database", database_url, "--by", "route")
    assert code == 0 and "TOTAL" in out and " 45 " in out


@pytest.mark.parametrize("argv, message", [
    (["--since", "yesterday"], "neither now, a duration"),
    (["--since", "2026-13-45"], "neither now, a duration"),
    (["--since", "99999999d"], "out of range"),
    (["--since", "1h", "--until", "2h"], "the window is empty"),
])
def test_bad_windows_are_clear_errors(tmp_path: Any, capsys: Any, argv: Any, message: str) -> None:
    code, out, err = spend(capsys, "--database", f"sqlite:///{tmp_path}/none.db", *argv)
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_unknown_grouping_and_missing_or_unmigrated_store(tmp_path: Any, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["spend", "--by", "colour"])
    assert exc.value.code == 2 and "invalid choice: 'colour'" in capsys.readouterr().err
    code, _out, err = spend(capsys, "--database", f"sqlite:///{tmp_path}/missing.db")
    assert code == 1 and "no such database file" in err
    open(f"{tmp_path}/blank.db", "wb").close()
    code, _out, err = spend(capsys, "--database", f"sqlite:///{tmp_path}/blank.db")
    assert code == 1 and "run `routeplane migrate`" in err

"""/ready on a store that answers reads but refuses writes: a SQLite file the service cannot write, a PostgreSQL standby."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from typing import Any, Dict, Iterator

import pytest

from routeplane.app import build_app
from routeplane.config import parse_config
from routeplane.store.database import Store


def _config(url: str) -> Dict[str, Any]:
    return {"providers": {"mock": {"protocol": "mock"}},
            "models": {"m": {"targets": [{"provider": "mock", "model": "echo"}]}},
            "database": {"url": url}}


@pytest.fixture
def immutable(tmp_path: Any) -> Iterator[Any]:
    """`immutable(path)` makes a file unwritable even for root (chattr +i), undone after the test."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    marked = []

    def mark(path: str) -> None:
        done = subprocess.run(["chattr", "+i", path], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not allowed here: {done.stderr.decode(errors='replace').strip()}")
        marked.append(path)

    yield mark
    for path in marked:
        subprocess.run(["chattr", "-i", path], check=False)


def test_ready_says_a_sqlite_file_it_cannot_write_is_read_only(tmp_path: Any, immutable: Any) -> None:
    db = tmp_path / "routeplane.db"
    app = build_app(parse_config(_config(f"sqlite:///{db}"), "<test>"))
    client = app.flask_app().test_client()
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json["store"] == "ok", ready.json
    immutable(str(db))  # as a file root created is to the service user: SELECT 1 still passes
    ready = client.get("/ready")
    assert ready.status_code == 503, ready.json
    assert ready.json["store"] == "read_only"
    assert ready.json["problems"] == ["store is read-only (this process cannot write the SQLite file or its directory)"]
    assert str(tmp_path) not in ready.get_data(as_text=True)


def test_ready_says_a_sqlite_directory_it_cannot_write_is_read_only(tmp_path: Any, immutable: Any) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    app = build_app(parse_config(_config(f"sqlite:///{folder}/routeplane.db"), "<test>"))
    client = app.flask_app().test_client()
    assert client.get("/ready").status_code == 200
    immutable(str(folder))  # SQLite creates and removes its journal files there
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.json["store"] == "read_only", ready.json


@pytest.mark.postgres
def test_ready_says_a_read_only_postgresql_is_read_only(postgres_cluster: Any) -> None:
    name = f"ro_{uuid.uuid4().hex[:8]}"
    url = postgres_cluster.create_database(name)
    app = build_app(parse_config(_config(url), "<test>"))
    client = app.flask_app().test_client()
    assert client.get("/ready").json["store"] == "ok"
    admin = Store.from_url(url)
    admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")  # as a standby answers
    admin.close()
    app.store.close()  # its next connections take the setting, as after a failover to a standby
    ready = client.get("/ready")
    assert ready.status_code == 503, ready.json
    assert ready.json["store"] == "read_only"
    assert ready.json["problems"] == ["store is read-only (PostgreSQL transaction_read_only is on: a standby?)"]
    assert "postgresql://" not in ready.get_data(as_text=True)

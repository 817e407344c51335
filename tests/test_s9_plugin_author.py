"""A third-party plugin author's path, as docs/plugins.md writes it: a plugin with a table of its own,
a stream hook fed split text, every wire streamed the same way, `routeplane plugins` and the template."""

from __future__ import annotations

import copy
import os
from importlib import metadata
from typing import Any, Dict, List

import pytest
import yaml

from routeplane import MigrationItem, MockExecutor, Plugin, PluginId
from routeplane.cli_plugins import _print_rows, describe_plugins
from routeplane.config import DEFAULT_CONFIG
from routeplane.hooks.language_model import PreRequestHook, SettlementRecorder, StreamAction, StreamHook
from routeplane.language_model.types import TextDelta
from routeplane.scaffold import new_plugin
from routeplane.store import MigrationError, Store
from routeplane.testing import Gateway, check_plugin, run_request, text_stream
from tests.test_docs_examples import python_blocks


class Rows(SettlementRecorder):
    def __init__(self, store: Any) -> None:
        self.store = store

    def record(self, settlement: Any) -> None:
        self.store.execute(f"INSERT INTO author_rows (request_id) VALUES ({self.store.param})",
                           (settlement.request_id,))


class TablePlugin(Plugin):
    """Keeps a row per request in its own table: needs `app.current_store` and its migration."""

    id = PluginId("author-table")

    def migrations(self) -> List[MigrationItem]:
        return [MigrationItem(1, "rows", "CREATE TABLE author_rows (request_id VARCHAR(64) PRIMARY KEY)",
                              tables=("author_rows",))]

    def install(self, app: Any) -> None:
        if app.current_store is None:
            raise RuntimeError("author-table needs the store")
        app.language_model_builder().settlement_recorder(Rows(app.current_store))


def _count(store: Store) -> int:
    return store.execute("SELECT COUNT(*) FROM author_rows")[0][0]


def test_the_kit_gives_a_plugin_a_migrated_store(tmp_path: Any) -> None:
    """The kit had no store: a plugin with migrations could not be tested, nor its tables read."""
    with Gateway(plugins=[TablePlugin()], store=f"sqlite:///{tmp_path}/kit.db") as gw:
        assert gw.chat("one").status == 200 and gw.chat("two", stream=True).status == 200
        assert _count(gw.store) == 2
    report = check_plugin(TablePlugin(), store=f"sqlite:///{tmp_path}/contract.db")
    assert report.hooks["settlement_recorder"] == 1 and "client disconnect" in report.checks
    assert run_request({"model": "default", "messages": [{"role": "user", "content": "x"}]},
                       plugins=[TablePlugin()], store=f"sqlite:///{tmp_path}/one.db").status == 200


def test_a_config_naming_a_database_gets_that_store(tmp_path: Any) -> None:
    """`database.url` in the kit's config was silently ignored: the plugin saw no store."""
    config = {**copy.deepcopy(DEFAULT_CONFIG), "database": {"url": f"sqlite:///{tmp_path}/cfg.db"}}
    with Gateway(plugins=[TablePlugin()], config=config) as gw:
        gw.chat("hi")
        assert _count(gw.store) == 1
    assert Gateway(config=copy.deepcopy(DEFAULT_CONFIG)).store is None  # the default stays storeless


def test_a_bad_migration_fails_the_gateway_build(tmp_path: Any) -> None:
    class Sneaky(TablePlugin):
        id = PluginId("author-sneaky")

        def migrations(self) -> List[MigrationItem]:
            return [MigrationItem(1, "x", "CREATE TABLE elsewhere (n INTEGER)", tables=("author_rows",))]

    with pytest.raises(MigrationError, match="author-sneaky"):
        Gateway(plugins=[Sneaky()], store=f"sqlite:///{tmp_path}/bad.db")


def test_the_store_fixture_is_migrated_by_the_gateway_factory(routeplane_gateway: Any, routeplane_store: Store) -> None:
    gw = routeplane_gateway(plugins=[TablePlugin()], store=routeplane_store)
    gw.chat("hi")
    assert _count(routeplane_store) == 1
    assert routeplane_store.url.endswith("routeplane-test.db")


BODIES: Dict[str, Dict[str, Any]] = {
    "openai_chat": {"model": "default", "messages": [{"role": "user", "content": "hi there"}]},
    "anthropic_messages": {"model": "default", "max_tokens": 50, "messages": [{"role": "user", "content": "hi there"}]},
    "openai_responses": {"model": "default", "input": "hi there"},
    "gemini": {"contents": [{"role": "user", "parts": [{"text": "hi there"}]}]},
}


@pytest.mark.parametrize("wire", sorted(BODIES))
def test_stream_true_streams_on_every_wire(wire: str) -> None:
    """`stream=True` was a ValueError on every wire but Gemini's."""
    r = Gateway().request(BODIES[wire], wire=wire, stream=True)
    assert r.streamed and r.text == "You said: hi there"
    assert "stream" not in BODIES[wire], "the caller's body is not changed"
    plain = run_request(BODIES[wire], wire=wire, stream=False)
    assert plain.status == 200 and not plain.streamed


def test_stream_flag_against_the_body_or_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="contradicts"):
        Gateway().request({**BODIES["openai_chat"], "stream": False}, stream=True)
    with pytest.raises(ValueError, match="as a dict"):
        Gateway().request(b'{"model": "default"}', stream=True)


class Mask(StreamHook):
    def on_part(self, ctx: Any, part: Any) -> StreamAction:
        if isinstance(part, TextDelta):
            return StreamAction.replace([TextDelta(part.index, part.text.replace("secret", "***"))])
        return StreamAction.pass_()


def test_text_stream_scripts_text_split_across_deltas() -> None:
    upstream = MockExecutor()
    upstream.push(text_stream("my sec", "ret plan"))
    upstream.push(text_stream("my secret plan"))
    gw = Gateway(hooks=[Mask()], executor=upstream)
    r = gw.chat("x", stream=True)
    assert r.text == "my secret plan"  # a per-delta match misses the split word: what the docs warn of
    deltas = [c["choices"][0]["delta"].get("content") for c in r.sse if isinstance(c, dict) and c.get("choices")]
    assert "my sec" in deltas and "ret plan" in deltas
    assert gw.chat("x", stream=True).text == "my *** plan"


def _entry_point(monkeypatch: pytest.MonkeyPatch, name: str, target: str) -> None:
    ep = metadata.EntryPoint(name, target, "routeplane.plugins")
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda **kw: [ep] if kw.get("group") == "routeplane.plugins" else real(**kw))


def test_routeplane_plugins_lists_a_plugin_that_needs_the_store(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """It was built without the store the gateway gives it, so listed as a RuntimeError; no file is opened."""
    _entry_point(monkeypatch, "author-table", f"{__name__}:TablePlugin")
    db = tmp_path / "listed.db"
    raw = {**copy.deepcopy(DEFAULT_CONFIG), "database": {"url": f"sqlite:///{db}"}, "plugins": {"author-table": {}}}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(raw))
    [row] = describe_plugins(str(path))
    assert "error" not in row, row
    assert row["hooks"] == {"settlement": ["Rows"]} and row["migrations"] == ["1:rows"]
    assert not db.exists()


def test_a_multi_line_listing_error_stays_indented(capsys: pytest.CaptureFixture[str]) -> None:
    _print_rows([{"id": "x", "target": "m:X", "enabled": False,
                  "error": "ConfigError: plugins.x: invalid options:\n  plugins.x.tenants: Missing data."}])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "    error: ConfigError: plugins.x: invalid options:"
    assert lines[2] == "      plugins.x.tenants: Missing data."


def test_the_template_is_typed(tmp_path: Any) -> None:
    root = new_plugin("typed-thing", str(tmp_path))
    pkg = os.path.join(root, "routeplane_typed_thing")
    assert os.path.exists(os.path.join(pkg, "py.typed"))
    with open(os.path.join(root, "setup.cfg"), encoding="utf-8") as fh:
        assert "routeplane_typed_thing = py.typed" in fh.read()
    with open(os.path.join(pkg, "__init__.py"), encoding="utf-8") as fh:
        source = fh.read()
    assert "def check(self, ctx: PipelineContext) -> HookDecision:" in source
    assert "def install(self, app: AppBuilder) -> None:" in source


def test_the_guide_shows_a_plugin_with_a_table_and_its_test() -> None:
    """docs/plugins.md's migrations example uses the store through the kit, as a reader would run it."""
    blocks = python_blocks()
    ns: Dict[str, Any] = {"__name__": "docs_plugins_examples"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"plugins.md:python-block-{i}", "exec"), ns)  # noqa: S102 - our own docs
    assert any("store=" in b and "counting_requests" in b for b in blocks)
    assert issubclass(ns["CountingPlugin"], Plugin) and "text_stream" in ns and "TenantKeys" in ns
    assert isinstance(ns["MaskWord"]("x"), StreamHook) and issubclass(ns["CacheHook"], PreRequestHook)

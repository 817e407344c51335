"""Review of aa00eea (a stream's opening held until its first content) and 656bc36 (auth.audience,
explicit empty allowlists, migration 4 of the auth plugin): what the review checked beyond the commits'
own tests, and the problems it found."""

from __future__ import annotations

import threading
from typing import Any, List

import pytest

from routeplane.app import App, Plugin, PluginId
from routeplane.auth.keys import create_key
from routeplane.auth.store import MIGRATIONS, AuthStore
from routeplane.config import parse_config
from routeplane.language_model.context import PipelineContext
from routeplane.language_model.types import Message, Prompt, Role, TextPart
from routeplane.store import migrate
from routeplane.store.migrations import verify
from routeplane.testing import CapturedSettlements
from tests.support.upstream import FakeUpstream, Reply

# --- 656bc36: migration 4 on every dialect ---------------------------------------------------------


class _AuthAt(Plugin):
    """The auth plugin's migrations up to `upto` (an older release of it)."""

    id = PluginId("auth")

    def __init__(self, upto: int) -> None:
        self.upto = upto

    def migrations(self) -> List[Any]:
        return list(MIGRATIONS[: self.upto])


def test_migration_4_keeps_legacy_keys_all_on_every_dialect(dialect_store: Any) -> None:
    """Keys an older release stored with `[]` (= every model then) read `["*"]` after migration 4; a list
    stays as it is; running the migrations again changes nothing and the history verifies."""
    db = dialect_store
    migrate(db, [_AuthAt(3)])
    store = AuthStore(db)
    legacy = create_key(store, models=["placeholder"])[0]
    db.execute(f"UPDATE auth_api_keys SET models = '[]' WHERE id = {db.param}", (legacy.id,))  # as old code wrote
    some = create_key(store, models=["gpt-*"])[0]
    applied = migrate(db, [_AuthAt(4)])
    assert [(m.plugin, m.version) for m in applied] == [("auth", 4)]
    assert store.get_key(legacy.id).models == ("*",)  # type: ignore[union-attr]
    assert store.get_key(some.id).models == ("gpt-*",)  # type: ignore[union-attr]
    none = create_key(store, models=[])[0]  # written after the migration: an explicit "no model"
    assert migrate(db, [_AuthAt(4)]) == []  # once only: a later explicit [] is never widened
    verify(db, [_AuthAt(4)])
    assert store.get_key(none.id).models == ()  # type: ignore[union-attr]


# --- aa00eea: a worker shutting down while a stream's opening is held ------------------------------

AN_START = {"type": "message_start", "message": {"id": "msg_a", "type": "message", "role": "assistant",
                                                 "model": "up", "content": [], "stop_reason": None,
                                                 "usage": {"input_tokens": 3, "output_tokens": 0}}}
AN_ANSWER = [AN_START, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
             {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "B"}},
             {"type": "content_block_stop", "index": 0},
             {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
             {"type": "message_stop"}]
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@pytest.fixture
def two_anthropic_upstreams() -> Any:
    a, b = FakeUpstream().start(), FakeUpstream().start()
    yield a, b
    a.stop()
    b.stop()


def _pipeline(a: FakeUpstream, b: FakeUpstream, failures: int) -> Any:
    providers = {name: {"protocol": "anthropic_messages", "base_url": up.url, "api_key": "k",
                        "timeouts": {"connect": 2.0, "read": 10.0}} for name, up in (("a", a), ("b", b))}
    config = {"providers": providers,
              "models": {"two": {"targets": [{"provider": "a", "model": "m"}, {"provider": "b", "model": "m"}]}},
              "fallback": {"cooldown": {"failures": failures, "seconds": 30}}}
    settlements = CapturedSettlements()
    app = (App.builder().config(parse_config(config, "<test>")).inline_observers()
           .language_model(lambda lm: lm.settlement_recorder(settlements)).build())
    return app.pipeline, settlements


def _ctx(rid: str) -> PipelineContext:
    prompt = Prompt(model="two", messages=(Message(Role.USER, (TextPart("hi"),)),), stream=True)
    return PipelineContext(rid, "anthropic_messages", prompt, {})


def test_shutdown_during_the_hold_is_a_503_without_fallback_or_blame(two_anthropic_upstreams: Any) -> None:
    """The worker's graceful shutdown cuts a request whose opening is held (A sent message_start, then
    only pings): the client gets the shutdown's 503 at once, B is not called, A is not blamed."""
    from routeplane.errors import StreamAborted
    from routeplane.web.common import shutting_down

    a, b = two_anthropic_upstreams
    pl, settlements = _pipeline(a, b, failures=1)
    a.enqueue(Reply.anthropic_sse([AN_START, {"type": "ping"}, {"type": "ping"}], chunk_delay=2.0))
    ctx = _ctx("shutdown-in-hold")
    timer = threading.Timer(0.5, lambda: ctx.abort(shutting_down()))
    timer.start()
    with pytest.raises(StreamAborted) as info:
        pl.run(ctx)
    timer.join()
    assert info.value.status == 503 and len(b.requests) == 0
    assert not pl.cooldown.would_skip("a:m")
    [s] = settlements.items
    assert (s.outcome, s.status, s.usage.input_tokens, s.cost_micro_usd) == ("error", 503, 0, 0)


def test_a_failure_in_the_hold_closes_the_failed_attempts_connection(two_anthropic_upstreams: Any) -> None:
    """A's connection, abandoned mid-body at its error event, is closed, not pooled half-read; B's,
    read to its end, is kept for reuse."""
    a, b = two_anthropic_upstreams
    pl, settlements = _pipeline(a, b, failures=0)
    a.enqueue(Reply.anthropic_sse([AN_START, OVERLOADED, {"type": "ping"}, {"type": "ping"}], chunk_delay=0.2))
    b.enqueue(Reply.anthropic_sse(AN_ANSWER))
    parts = list(pl.run(_ctx("fallback-in-hold")))
    assert any(getattr(p, "text", None) == "B" for p in parts)
    live = {origin: sum(1 for c in pool.pool.queue if c is not None and getattr(c, "sock", None) is not None)
            for origin, pool in pl.executor._adapter._pools.items()}
    assert live == {a.url: 0, b.url: 1}
    [s] = settlements.items
    assert [(t.provider, t.ok) for t in s.attempts] == [("a", False), ("b", True)]


# --- 656bc36: a rolling upgrade (or a rollback) shares the key table between two releases -----------


def _old_release_allows(stored: str, model: str) -> bool:
    """How the release before 656bc36 read a key's models column: `row.models or ("*",)`, then
    `model_allowed`, where an empty list allowed every model."""
    import json

    from routeplane.auth.globs import glob_match

    patterns = tuple(json.loads(stored)) or ("*",)
    return any(glob_match(p, model) for p in patterns)


def test_a_key_that_allows_no_model_allows_none_on_an_older_release_too(dialect_store: Any) -> None:
    """During a rolling upgrade (hosts of both releases on one PostgreSQL) or after a rollback, a key
    created with `--models ''` must not become an every-model key on the hosts of the older release."""
    db = dialect_store
    migrate(db, [_AuthAt(4)])
    none = create_key(AuthStore(db), models=[])[0]
    [(stored,)] = db.execute(f"SELECT models FROM auth_api_keys WHERE id = {db.param}", (none.id,))
    assert not _old_release_allows(stored, "gpt-4o")
    assert AuthStore(db).get_key(none.id).models == ()  # type: ignore[union-attr]


def test_a_key_an_older_release_writes_after_the_migration_still_allows_every_model(tmp_path: Any) -> None:
    """An older release's `keys create` without --models (a provisioning job not yet upgraded) wrote
    `[]` for "every model" after migration 4 ran: the new release must not read it as "no model"."""
    from routeplane.store import Store

    db = Store.from_url(f"sqlite:///{tmp_path}/k.db")
    migrate(db, [_AuthAt(4)])
    row = create_key(AuthStore(db), models=["placeholder"])[0]
    db.execute(f"UPDATE auth_api_keys SET models = '[]' WHERE id = {db.param}", (row.id,))  # as the old release wrote
    assert AuthStore(db).get_key(row.id).models == ("*",)  # type: ignore[union-attr]
    db.close()

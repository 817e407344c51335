"""A credential a client sent as the model name never reaches the spend log: not its route, not its model."""

from __future__ import annotations

import time

from routeplane.language_model.settlement import Attempt, Settlement
from routeplane.store.spend_log import spend_row

KEY = "rpk_0123456789abcdef_" + "A" * 43
JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def row(route: str, model: str = "gpt-up") -> dict:
    return spend_row(Settlement("r1", time.time(), "openai_chat", route, False, "error", model=model, status=404))


def test_a_key_or_token_as_the_route_is_redacted_and_the_key_id_kept() -> None:
    for route in (KEY, "openai:" + KEY, JWT):
        r = row(route)
        assert "A" * 43 not in r["route"] and JWT not in r["route"]
        assert "[redacted]" in r["route"]
    assert row(KEY)["route"].startswith("rpk_0123456789abcdef_")  # the public id tells the caller apart


def test_a_key_in_the_upstream_model_name_is_redacted() -> None:
    assert row("openai:" + KEY, model=KEY)["model"] == "rpk_0123456789abcdef_[redacted]"


def test_plain_names_are_unchanged() -> None:
    r = row("gpt-4o-mini", model="gpt-4o-mini-2024-07-18")
    assert (r["route"], r["model"]) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    assert spend_row(Settlement("r1", time.time(), "openai_chat", "x", False, "error"))["model"] is None


def test_a_key_in_an_attempts_model_is_redacted() -> None:
    attempt = Attempt("openai", KEY, "openai_chat", False, 1.0, status=404)
    r = spend_row(Settlement("r1", time.time(), "openai_chat", "openai:" + KEY, False, "error", model=KEY,
                             attempts=(attempt,), status=404))
    assert "A" * 43 not in r["attempts_json"] and "[redacted]" in r["attempts_json"]

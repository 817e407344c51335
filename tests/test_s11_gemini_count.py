"""Gemini countTokens counts what generateContent would send: the transport interceptors see the request
first, and a prompt over the configured limits is refused as generateContent refuses it."""

from __future__ import annotations

from typing import Any, Dict, Tuple

from routeplane.adapters.prepost import PrePostPlugin, PrePostPluginAdapter
from routeplane.config import DEFAULT_CONFIG
from routeplane.testing import Gateway

COUNT = "/v1beta/models/default:countTokens"
GENERATE = "/v1beta/models/default:generateContent"
LONG = "Expand every abbreviation before the model reads it. " * 8


def _body(*texts: str) -> Dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": t}]} for t in texts]}


class Expander(PrePostPlugin):
    """A transport interceptor that rewrites the raw body (as a host's decompressor or template filler would)."""

    name = "expander"

    def transport_interceptor(self, headers: Dict[str, str], body: Any) -> Tuple[Dict[str, str], Any]:
        return headers, _body(LONG) if body == _body("short") else body


def test_count_tokens_counts_the_body_the_interceptors_made() -> None:
    """They ran for generateContent but not for countTokens, which counted the raw `short`."""
    intercepted = Gateway(plugins=[PrePostPluginAdapter([Expander()])]).request(_body("short"), path=COUNT)
    direct = Gateway().request(_body(LONG), path=COUNT)
    assert intercepted.status == direct.status == 200
    assert intercepted.json == direct.json and direct.json["totalTokens"] > 10


def test_count_tokens_refuses_a_prompt_over_the_limits_as_generate_content_does() -> None:
    gw = Gateway(config={**DEFAULT_CONFIG, "limits": {"max_messages": 2}})
    generated = gw.request(_body("a", "b", "c"), path=GENERATE)
    counted = gw.request(_body("a", "b", "c"), path=COUNT)
    assert generated.status == counted.status == 400
    assert counted.json == generated.json and "limit is 2" in counted.json["error"]["message"]
    assert gw.request(_body("a", "b"), path=COUNT).status == 200


def test_an_unknown_method_names_every_method_the_gateway_serves() -> None:
    """google-genai's embed_content lands here; the 404 left countTokens out of the methods to use."""
    r = Gateway().request({"content": {"parts": [{"text": "x"}]}}, path="/v1beta/models/default:embedContent")
    assert r.status == 404 and r.json["error"]["status"] == "NOT_FOUND"
    assert all(m in r.json["error"]["message"] for m in (":generateContent", ":streamGenerateContent", ":countTokens"))

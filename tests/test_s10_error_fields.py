"""Upstream errors keep what clients react to, whichever wire reported them (routeplane/protocols/base.py):
an account out of credit falls back and stays a billing error; a context overflow told in words inside a
200 answer is `context_length_exceeded`, as over HTTP."""

from __future__ import annotations

from routeplane.language_model.routing import RoutingTarget
from routeplane.protocols.base import in_band_error, upstream_status_error
from routeplane.protocols.openai_chat.response import error_in_body

TARGET = RoutingTarget(provider="up", model="m", protocol="openai_chat", base_url="http://127.0.0.1:9/v1")


def test_an_upstream_402_is_a_billing_error_that_falls_back() -> None:
    err = upstream_status_error(402, b'{"error": {"message": "Insufficient Balance"}}', {}, TARGET)
    assert (err.status, err.kind, err.retriable) == (402, "budget", True)


def test_a_context_overflow_in_a_200_answer_is_context_length_exceeded() -> None:
    gemini_words = "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
    assert in_band_error(400, gemini_words, TARGET).code == "context_length_exceeded"
    assert in_band_error(400, "Invalid value for 'temperature'.", TARGET).code is None


def test_openrouters_numeric_code_keeps_the_context_length_code() -> None:
    err = error_in_body({"code": 400, "message": "This endpoint's maximum context length is 8192 tokens."}, TARGET)
    assert err.status == 400 and err.code == "context_length_exceeded"

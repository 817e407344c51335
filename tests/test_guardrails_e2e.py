"""The guardrails plugin, loaded by entry point from `plugins.guardrails` in the config, under a real gunicorn."""

from __future__ import annotations

from typing import Iterator, Tuple

import openai
import pytest
import requests
from openai import OpenAI

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_chunk

pytestmark = pytest.mark.e2e

KEY = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d"
EMAIL = "jane.doe@example.com"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[GatewayProcess, FakeUpstream, OpenAI]]:
    upstream = FakeUpstream().start()
    db = tmp_path_factory.mktemp("guardrails-e2e") / "routeplane.db"
    config = {
        "database": {"url": f"sqlite:///{db}"},
        "server": {"stats_flush_seconds": 0.3},
        "providers": {"mock": {"protocol": "mock"},
                      "up": {"protocol": "openai_chat", "base_url": upstream.url + "/v1", "api_key": "sk-upstream"}},
        "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]},
                   "up": {"targets": [{"provider": "up", "model": "up-model"}]}},
        "plugins": {"guardrails": {
            "upgoing": {"api_keys": "block", "ip_addresses": "redact"},
            "downgoing": {"api_keys": "block", "pii_emails": "redact"},
            "block_message": {"include_details": True},
        }},
    }
    gw = GatewayProcess(config).start()
    client = OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    try:
        yield gw, upstream, client
    finally:
        client.close()
        gw.stop()
        upstream.stop()


def _sse(pieces: list) -> Reply:
    return Reply.sse([openai_chunk({"role": "assistant", "content": ""}),
                      *[openai_chunk({"content": p}) for p in pieces], openai_chunk({}, "stop")])


def test_upgoing_block_is_a_400_guardrail_error(stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    before = len(upstream.requests)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="up", messages=[{"role": "user", "content": f"use {KEY}"}])
    assert info.value.status_code == 400
    assert info.value.code == "guardrail_violation"
    assert "api_keys" in info.value.message and KEY[:12] not in info.value.message
    assert len(upstream.requests) == before  # never reached the upstream


def test_email_split_across_upstream_chunks_is_redacted_in_the_stream(
        stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    upstream.enqueue(_sse(["Write to jane.d", "oe@exam", "ple.c", "om any time."]))
    stream = client.chat.completions.create(model="up", messages=[{"role": "user", "content": "contact?"}],
                                            stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Write to [REDACTED:email] any time."


def test_key_in_the_upstream_stream_ends_it_with_an_error(stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    upstream.enqueue(_sse(["Here: " + KEY[:10], KEY[10:30], KEY[30:] + " bye"]))
    got = ""
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model="up", messages=[{"role": "user", "content": "key?"}],
                                                    stream=True):
            got += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert "blocked by a guardrail" in str(info.value)
    assert KEY[:8] not in got


def test_non_streaming_reply_is_redacted_and_logs_never_hold_the_secret(
        stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    r = client.chat.completions.create(model="default", messages=[{"role": "user", "content": f"mail {EMAIL}"}])
    assert r.choices[0].message.content == "You said: mail [REDACTED:email]"
    logs = gw.logs()
    assert "guardrail" in logs and "pii_emails" in logs
    assert EMAIL not in logs and KEY[:12] not in logs


def test_upgoing_redaction_is_what_the_real_upstream_receives(stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    upstream.enqueue(_sse(["ok"]))
    stream = client.chat.completions.create(
        model="up", stream=True, messages=[{"role": "system", "content": "db host 10.20.30.40"},
                                           {"role": "user", "content": "connect to 172.16.5.9 please"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "ok"
    sent = upstream.requests[-1].json["messages"]
    assert [m["content"] for m in sent] == ["db host [REDACTED:ip_address]", "connect to [REDACTED:ip_address] please"]


def test_counters_reach_admin_metrics(stack: Tuple[GatewayProcess, FakeUpstream, OpenAI]) -> None:
    gw, upstream, client = stack
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": f"key {KEY}"}])
    client.chat.completions.create(model="default", messages=[{"role": "user", "content": f"mail {EMAIL}"}])
    with requests.get(gw.url + "/admin/metrics", timeout=30) as resp:
        assert resp.status_code == 200, resp.text
        counters = resp.json()["plugins"]["counters"]["guardrails"]
    assert counters["upgoing"]["api_keys"]["block"] >= 1
    assert counters["downgoing"]["pii_emails"]["redact"] >= 1

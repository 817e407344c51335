"""A web search turn through the gateway (real gunicorn), the official anthropic SDK as the client of a fake
Anthropic upstream: the server-tool blocks and citations reach the SDK in order, streamed and not, and the next
turn sends them back to the upstream as they were. Another wire's upstream is a 400 naming the block (never a
fallback), and an OpenAI Chat client of the same answer gets its text only."""

from __future__ import annotations

import copy
from typing import Any, Dict, Iterator, List, Tuple

import anthropic
import openai
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_completion
from tests.test_anthropic_server_tools import CITATION, CONTENT, SEARCH_RESULT, SEARCH_USE, _answer, _sse

pytestmark = pytest.mark.e2e

KEY = "sk-upstream-0123456789abcdef"
QUESTION = {"role": "user", "content": "When was Claude Shannon born?"}
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}


@pytest.fixture(scope="module")
def gateway(servers: Tuple[FakeUpstream, FakeUpstream],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    a, b = servers
    config = {
        "database": {"url": f"sqlite:///{tmp_path_factory.mktemp('anthropic-server-tools')}/rp.db"},
        "providers": {
            "an": {"protocol": "anthropic_messages", "base_url": a.url, "api_key": KEY},
            "oc": {"protocol": "openai_chat", "base_url": b.url + "/v1", "api_key": KEY},
        },
        "models": {
            "claude": {"targets": [{"provider": "an", "model": "claude-up"}]},
            "gpt": {"targets": [{"provider": "oc", "model": "gpt-up"}]},
            "claude-or-gpt": {"targets": [{"provider": "an", "model": "claude-up"},
                                          {"provider": "oc", "model": "gpt-up"}]},
        },
        "fallback": {"cooldown": {"failures": 0}},
    }
    gw = GatewayProcess(config, workers=1, threads=4).start()
    yield gw
    gw.stop()


def _done() -> Reply:
    return Reply.json(_answer([{"type": "text", "text": "He died on February 24, 2001."}]))


def _check_search_turn(message: Any) -> List[Dict[str, Any]]:
    """The SDK's message holds the search call with its input, its result and the cited text, in order."""
    assert [b.type for b in message.content] == ["text", "server_tool_use", "web_search_tool_result", "text"]
    call, result, cited = message.content[1], message.content[2], message.content[3]
    assert (call.id, call.name, call.input) == (SEARCH_USE["id"], "web_search", SEARCH_USE["input"])
    assert result.tool_use_id == "srvtoolu_01" and result.content[0].url == SEARCH_RESULT["content"][0]["url"]
    assert cited.text == CONTENT[3]["text"]
    assert [(c.type, c.url, c.cited_text) for c in cited.citations] == [
        ("web_search_result_location", CITATION["url"], CITATION["cited_text"])]
    assert message.usage.server_tool_use.web_search_requests == 1
    return [{"role": "assistant", "content": message.content}, {"role": "user", "content": "And when did he die?"}]


def _check_sent_back(up: FakeUpstream, claude: anthropic.Anthropic, turn: List[Dict[str, Any]]) -> None:
    up.enqueue(_done())
    reply = claude.messages.create(model="claude", max_tokens=200, tools=[WEB_SEARCH], messages=[QUESTION, *turn])
    assert reply.content[0].text.startswith("He died")
    sent = up.requests[-1].json
    assert sent["messages"][1] == {"role": "assistant", "content": CONTENT}
    assert sent["tools"] == [WEB_SEARCH]


def test_a_web_search_turn_and_the_next_one(ups: Any, claude: anthropic.Anthropic) -> None:
    a, b = ups
    a.enqueue(Reply.json(_answer(copy.deepcopy(CONTENT))))
    message = claude.messages.create(model="claude", max_tokens=200, tools=[WEB_SEARCH], messages=[QUESTION])
    _check_sent_back(a, claude, _check_search_turn(message))
    assert not b.requests


def test_a_streamed_web_search_turn_and_the_next_one(ups: Any, claude: anthropic.Anthropic) -> None:
    a, b = ups
    a.enqueue(Reply.anthropic_sse(_sse(copy.deepcopy(CONTENT))))
    with claude.messages.stream(model="claude", max_tokens=200, tools=[WEB_SEARCH], messages=[QUESTION]) as stream:
        message = stream.get_final_message()
    _check_sent_back(a, claude, _check_search_turn(message))


def test_a_paused_turn_is_continued_with_its_blocks(ups: Any, claude: anthropic.Anthropic) -> None:
    a, _ = ups
    a.enqueue(Reply.anthropic_sse(_sse(copy.deepcopy(CONTENT[:2]), "pause_turn")))
    with claude.messages.stream(model="claude", max_tokens=200, tools=[WEB_SEARCH], messages=[QUESTION]) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "pause_turn"
    a.enqueue(_done())
    claude.messages.create(model="claude", max_tokens=200, tools=[WEB_SEARCH],
                           messages=[QUESTION, {"role": "assistant", "content": message.content}])
    assert a.requests[-1].json["messages"][1] == {"role": "assistant", "content": CONTENT[:2]}


HISTORY = [QUESTION, {"role": "assistant", "content": CONTENT}, {"role": "user", "content": "And when did he die?"}]


def test_another_wires_upstream_is_a_400_naming_the_block(ups: Any, claude: anthropic.Anthropic) -> None:
    a, b = ups
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="gpt", max_tokens=200, messages=HISTORY)
    assert info.value.body["error"]["type"] == "invalid_request_error"
    message = info.value.body["error"]["message"]
    assert "'messages[1].content[1]'" in message and "server-side tools" in message, message
    assert not a.requests and not b.requests


def test_a_failing_anthropic_target_does_not_fall_back_to_another_wire(ups: Any,
                                                                       claude: anthropic.Anthropic) -> None:
    a, b = ups
    a.enqueue(Reply.json({"type": "error", "error": {"type": "api_error", "message": "down"}}, 503))
    with pytest.raises(anthropic.APIStatusError) as info:
        claude.messages.create(model="claude-or-gpt", max_tokens=200, messages=HISTORY)
    # The Anthropic target's own failure, not the other wire's 400 (which would hide it).
    assert info.value.status_code >= 500 and "HTTP 503" in info.value.body["error"]["message"], info.value.body
    assert len(a.requests) == 1 and not b.requests


def test_a_chat_client_of_the_answer_gets_its_text_only(ups: Any, oai: openai.OpenAI) -> None:
    a, _ = ups
    a.enqueue(Reply.json(_answer(copy.deepcopy(CONTENT))))
    completion = oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": "When?"}])
    assert completion.choices[0].message.content == CONTENT[0]["text"] + CONTENT[3]["text"]
    assert "srvtoolu" not in completion.model_dump_json()
    a.enqueue(Reply.anthropic_sse(_sse(copy.deepcopy(CONTENT))))
    chunks = list(oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": "When?"}],
                                              stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        CONTENT[0]["text"] + CONTENT[3]["text"]
    assert not any("srvtoolu" in c.model_dump_json() for c in chunks)


def test_the_chat_upstream_still_answers_a_plain_anthropic_history(ups: Any, claude: anthropic.Anthropic) -> None:
    """Citations alone are notes, not part of the turn: another wire gets the text without them."""
    _, b = ups
    b.enqueue(Reply.json(openai_completion("2001.")))
    history = [QUESTION, {"role": "assistant", "content": [CONTENT[3]]}, {"role": "user", "content": "Death?"}]
    assert claude.messages.create(model="gpt", max_tokens=200, messages=history).content[0].text == "2001."
    assert b.requests[0].json["messages"][1] == {"role": "assistant", "content": CONTENT[3]["text"]}

"""Cross-wire request limits through the official SDKs and a real gunicorn: stop sequences past the
target's limit, an output bound of 0, a text document for a Chat upstream, Gemini tool and integer
fields. A limit the target cannot take is the client's 400 naming its own field, before any upstream
call; nothing is cut silently."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List

import anthropic
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream
from tests.support.wires import via_wires_config

pytestmark = pytest.mark.e2e

WIRES = ("openai_chat", "anthropic_messages", "gemini")
STOPS = ["s1", "s2", "s3", "s4", "s5", "s6"]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    config = via_wires_config(fake.url, WIRES)
    config["models"]["chat-then-gemini"] = {"targets": [{"provider": "up_openai_chat", "model": "up-openai_chat"},
                                                        {"provider": "up_gemini", "model": "up-gemini"}]}
    gw = GatewayProcess(config).start()
    yield gw
    gw.stop()


def _bodies(up: FakeUpstream) -> List[Dict[str, Any]]:
    return [r.json for r in up.requests]


def _gemini_400(exc: pytest.ExceptionInfo[genai_errors.ClientError], param: str) -> None:
    assert exc.value.code == 400 and exc.value.status == "INVALID_ARGUMENT"
    assert param in str(exc.value.message)


# --- 1. stop sequences ---------------------------------------------------------------------


@pytest.mark.parametrize("count", [5, 6])
def test_anthropic_stops_past_the_chat_limit_are_the_clients_400(claude: anthropic.Anthropic, up: FakeUpstream,
                                                                 count: int) -> None:
    """OpenAI takes at most 4 `stop`: five used to reach the upstream, whose 400 names `stop`."""
    with pytest.raises(anthropic.BadRequestError, match="'stop_sequences' has") as exc:
        claude.messages.create(model="via-openai_chat", max_tokens=50, messages=HI, stop_sequences=STOPS[:count])
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    assert "at most 4" in exc.value.message
    assert not up.requests


def test_anthropic_stops_past_the_gemini_limit_are_the_clients_400(claude: anthropic.Anthropic,
                                                                   up: FakeUpstream) -> None:
    """Gemini takes at most 5: the sixth used to be dropped without a word."""
    with pytest.raises(anthropic.BadRequestError, match="'stop_sequences' has 6 stop sequences"):
        claude.messages.create(model="via-gemini", max_tokens=50, messages=HI, stop_sequences=STOPS)
    assert not up.requests


def test_gemini_stops_past_the_chat_limit_name_stop_sequences(gclient: genai.Client, up: FakeUpstream) -> None:
    with pytest.raises(genai_errors.ClientError) as exc:
        gclient.models.generate_content(model="via-openai_chat", contents="hi",
                                        config=types.GenerateContentConfig(stop_sequences=STOPS[:5]))
    _gemini_400(exc, "'generationConfig.stopSequences' has 5")
    assert not up.requests


def test_a_chat_target_is_skipped_for_the_fallback_that_takes_five_stops(claude: anthropic.Anthropic,
                                                                          up: FakeUpstream) -> None:
    claude.messages.create(model="chat-then-gemini", max_tokens=50, messages=HI, stop_sequences=STOPS[:5])
    assert [r.path for r in up.requests] == ["/v1beta/models/up-gemini:generateContent"]
    assert _bodies(up)[0]["generationConfig"]["stopSequences"] == STOPS[:5]


def test_stops_within_the_limit_cross_whole(claude: anthropic.Anthropic, gclient: genai.Client,
                                            up: FakeUpstream) -> None:
    claude.messages.create(model="via-openai_chat", max_tokens=50, messages=HI, stop_sequences=STOPS[:4])
    gclient.models.generate_content(model="via-openai_chat", contents="hi",
                                    config=types.GenerateContentConfig(stop_sequences=STOPS[:4]))
    claude.messages.create(model="via-gemini", max_tokens=50, messages=HI, stop_sequences=STOPS[:5])
    chat, chat2, gem = _bodies(up)
    assert chat["stop"] == chat2["stop"] == STOPS[:4]
    assert gem["generationConfig"]["stopSequences"] == STOPS[:5]


def test_a_gemini_clients_stops_reach_a_gemini_upstream_uncut(gclient: genai.Client, up: FakeUpstream) -> None:
    """Same wire, Google judges its own field (its 400 names it); they used to be cut to 5."""
    gclient.models.generate_content(model="via-gemini", contents="hi",
                                    config=types.GenerateContentConfig(stop_sequences=STOPS))
    assert _bodies(up)[0]["generationConfig"]["stopSequences"] == STOPS


# --- 2. a text document for a Chat upstream ---------------------------------------------------


def test_an_anthropic_text_document_reaches_chat_as_text_with_its_title(claude: anthropic.Anthropic,
                                                                        up: FakeUpstream) -> None:
    """Chat `file` parts take PDFs: a data:text/plain file_data is OpenAI's 400."""
    doc = {"type": "document", "title": "Notes.txt", "source": {"type": "text", "media_type": "text/plain",
                                                                  "data": "Paris is the capital. ünïcode"}}
    claude.messages.create(model="via-openai_chat", max_tokens=50, messages=[
        {"role": "user", "content": [doc, {"type": "text", "text": "Summarise."}]}])
    content = _bodies(up)[0]["messages"][-1]["content"]
    assert content == [{"type": "text", "text": "Notes.txt\n\nParis is the capital. ünïcode"},
                       {"type": "text", "text": "Summarise."}]


def test_a_text_document_in_a_tool_result_is_the_results_text(claude: anthropic.Anthropic,
                                                              up: FakeUpstream) -> None:
    """It used to be dropped: a tool message holds text only, and the file went nowhere."""
    claude.messages.create(model="via-openai_chat", max_tokens=50, messages=[
        {"role": "user", "content": "Read it."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "line one"}}]}]},
    ], tools=[{"name": "read", "input_schema": {"type": "object"}}])
    tool = [m for m in _bodies(up)[0]["messages"] if m["role"] == "tool"]
    assert tool == [{"role": "tool", "tool_call_id": "toolu_1", "content": "line one"}]


# --- 3. an output bound of 0 --------------------------------------------------------------------


@pytest.mark.parametrize("model", ["via-openai_chat", "via-gemini"])
def test_anthropic_max_tokens_0_for_another_wire_is_the_clients_400(claude: anthropic.Anthropic, up: FakeUpstream,
                                                                    model: str) -> None:
    """A cache pre-warm has no form elsewhere: Chat refuses 0, Gemini may read 0 as unset (a full answer)."""
    with pytest.raises(anthropic.BadRequestError, match="'max_tokens' is 0"):
        claude.messages.create(model=model, max_tokens=0, messages=HI)
    assert not up.requests


def test_anthropic_max_tokens_0_reaches_an_anthropic_upstream(claude: anthropic.Anthropic, up: FakeUpstream) -> None:
    claude.messages.create(model="via-anthropic_messages", max_tokens=0, messages=HI)
    assert _bodies(up)[0]["max_tokens"] == 0


def test_gemini_max_output_tokens_0_for_anthropic_is_the_clients_400(gclient: genai.Client, up: FakeUpstream) -> None:
    """It went on as `max_tokens: 0`: an Anthropic cache pre-warm, an empty answer."""
    with pytest.raises(genai_errors.ClientError) as exc:
        gclient.models.generate_content(model="via-anthropic_messages", contents="hi",
                                        config=types.GenerateContentConfig(max_output_tokens=0))
    _gemini_400(exc, "'generationConfig.maxOutputTokens' is 0")
    assert not up.requests


# --- 4. Gemini tool names and integer fields -------------------------------------------------------


def _weather_tool() -> types.Tool:
    return types.Tool(function_declarations=[types.FunctionDeclaration(
        name="get_weather", parameters_json_schema={"type": "object", "properties": {}})])


@pytest.mark.parametrize("names", [["get_time"], ["get_weather", "get_time"]])
def test_allowed_function_names_must_be_declared(gclient: genai.Client, up: FakeUpstream, names: List[str]) -> None:
    """A single undeclared name became a Chat tool_choice for a tool never offered (the upstream's 400)."""
    config = types.GenerateContentConfig(
        tools=[_weather_tool()], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
            mode="ANY", allowed_function_names=names)))
    with pytest.raises(genai_errors.ClientError) as exc:
        gclient.models.generate_content(model="via-openai_chat", contents="hi", config=config)
    _gemini_400(exc, "'get_time'")
    assert "allowedFunctionNames" in str(exc.value.message)
    assert not up.requests


@pytest.mark.parametrize("field,value", [("top_k", 1e300), ("max_output_tokens", 2**31), ("seed", -(2**31) - 1)])
def test_integer_generation_fields_past_int32_are_400(gclient: genai.Client, up: FakeUpstream, field: str,
                                                       value: float) -> None:
    """`topK: 1e300` went on as a 300-digit integer."""
    with pytest.raises(genai_errors.ClientError) as exc:
        gclient.models.generate_content(model="via-openai_chat", contents="hi",
                                        config=types.GenerateContentConfig(**{field: value}))
    _gemini_400(exc, "32-bit integer")
    assert not up.requests

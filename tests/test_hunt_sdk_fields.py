"""Bug hunt: request fields the four wires' official SDKs send, end to end through gunicorn with a scripted
upstream. A field is translated, passed through on its own wire, or refused with a 400 naming it when its
meaning cannot be kept; never silently dropped when dropping changes the answer."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator, List

import anthropic
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from openai import BadRequestError, OpenAI

from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply, openai_completion
from tests.support.wires import ALL_WIRES, via_wires_config

pytestmark = pytest.mark.e2e

USER = [{"role": "user", "content": "What is new in Paris?"}]
OTHERS = {w: tuple(x for x in ALL_WIRES if x != w) for w in ALL_WIRES}


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream) -> Iterator[GatewayProcess]:
    config = via_wires_config(fake.url, ALL_WIRES, timeouts={"connect": 2, "read": 5})
    # A fallback route whose head is Gemini: an Anthropic server tool skips it for the Anthropic target.
    config["models"]["gemini-then-anthropic"] = {"targets": [
        {"provider": "up_gemini", "model": "up-gemini"}, {"provider": "up_anthropic_messages", "model": "up-am"}]}
    gw = GatewayProcess(config).start()
    yield gw
    gw.stop()


def _refused_openai(param: str, create: Any, **kwargs: Any) -> None:
    """`create(**kwargs)` is a 400 naming `param`."""
    with pytest.raises(BadRequestError) as info:
        create(**kwargs)
    assert info.value.status_code == 400
    assert info.value.body["param"] == param, info.value.body
    assert f"'{param}'" in info.value.message


def assert_clean_log(gw: GatewayProcess) -> None:
    assert "Traceback" not in gw.logs(), gw.logs()[-3000:]


# --- fields whose meaning only their own wire keeps: a 400 on another wire, passed on their own -----


CHAT_ONLY: List[Dict[str, Any]] = [
    {"logit_bias": {"1734": -100}},
    {"logprobs": True, "top_logprobs": 2},
    {"web_search_options": {"search_context_size": "low"}},
]


@pytest.mark.parametrize("fields", CHAT_ONLY, ids=lambda f: next(iter(f)))
def test_chat_field_without_an_equivalent_is_a_400_on_another_wire(oai: OpenAI, up: FakeUpstream,
                                                                   fields: Dict[str, Any]) -> None:
    param = next(iter(fields))
    for wire in OTHERS["openai_chat"]:
        _refused_openai(param, oai.chat.completions.create, model=f"via-{wire}", messages=USER, **fields)
    assert not up.requests, "nothing reached an upstream"
    oai.chat.completions.create(model="via-openai_chat", messages=USER, **fields)
    sent = up.requests[-1].json
    assert {k: sent[k] for k in fields} == fields, "the Chat upstream gets them as sent"


def test_chat_fields_that_ask_for_nothing_still_cross(oai: OpenAI, up: FakeUpstream) -> None:
    """Defaults and empty values change nothing: a client that always sends them is not refused."""
    for wire in OTHERS["openai_chat"]:
        oai.chat.completions.create(model=f"via-{wire}", messages=USER, logit_bias={}, logprobs=False,
                                    modalities=["text"])
    assert len(up.requests) == 3


def test_responses_prompt_template_is_a_400_on_another_wire(oai: OpenAI, up: FakeUpstream) -> None:
    for wire in OTHERS["openai_responses"]:
        _refused_openai("prompt", oai.responses.create, model=f"via-{wire}", input="hi",
                        prompt={"id": "pmpt_123", "variables": {"city": "Paris"}})
    assert not up.requests
    oai.responses.create(model="via-openai_responses", input="hi", prompt={"id": "pmpt_123"})
    assert up.requests[-1].json["prompt"] == {"id": "pmpt_123"}


def _refused_anthropic(param: str, create: Any, **kwargs: Any) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        create(**kwargs)
    assert info.value.status_code == 400
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert f"'{param}'" in info.value.body["error"]["message"], info.value.body


WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
LOOKUP = {"name": "lookup", "description": "Look a word up", "input_schema": {"type": "object", "properties": {}}}


def test_anthropic_server_tools_and_mcp_servers_are_a_400_on_another_wire(claude: anthropic.Anthropic,
                                                                          up: FakeUpstream) -> None:
    for wire in OTHERS["anthropic_messages"]:
        _refused_anthropic("tools[1]", claude.messages.create, model=f"via-{wire}", max_tokens=50, messages=USER,
                           tools=[LOOKUP, WEB_SEARCH])
        _refused_anthropic("mcp_servers", claude.beta.messages.create, model=f"via-{wire}", max_tokens=50,
                           messages=USER, betas=["mcp-client-2025-04-04"],
                           mcp_servers=[{"type": "url", "url": "https://mcp.example.com/sse", "name": "ex"}])
    assert not up.requests
    claude.messages.create(model="via-anthropic_messages", max_tokens=50, messages=USER, tools=[LOOKUP, WEB_SEARCH])
    assert up.requests[-1].json["tools"][1] == WEB_SEARCH


def test_a_target_of_another_wire_is_skipped_for_a_server_tool(claude: anthropic.Anthropic, up: FakeUpstream) -> None:
    msg = claude.messages.create(model="gemini-then-anthropic", max_tokens=50, messages=USER, tools=[WEB_SEARCH])
    assert msg.content[0].type == "tool_use"  # the weather upstream answers any tool offer with a call
    assert [r.path for r in up.requests] == ["/v1/messages"], "the Gemini head was skipped, not tried"
    assert up.requests[0].json["tools"] == [WEB_SEARCH]


GEMINI_ONLY = [
    ({"cached_content": "cachedContents/abc123"}, "cachedContent"),
    ({"response_modalities": ["TEXT", "IMAGE"]}, "generationConfig.responseModalities"),
    ({"speech_config": {"voice_config": {"prebuilt_voice_config": {"voice_name": "Kore"}}}},
     "generationConfig.speechConfig"),
    ({"response_logprobs": True, "logprobs": 2}, "generationConfig.responseLogprobs"),
]


@pytest.mark.parametrize("config,param", GEMINI_ONLY, ids=[p for _, p in GEMINI_ONLY])
def test_gemini_field_without_an_equivalent_is_a_400_on_another_wire(gclient: genai.Client, up: FakeUpstream,
                                                                     config: Dict[str, Any], param: str) -> None:
    cfg = types.GenerateContentConfig(**config)
    for wire in OTHERS["gemini"]:
        with pytest.raises(genai_errors.ClientError) as info:
            gclient.models.generate_content(model=f"via-{wire}", contents="hi", config=cfg)
        assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
        assert f"'{param}'" in info.value.message, info.value.message
    assert not up.requests
    gclient.models.generate_content(model="via-gemini", contents="hi", config=cfg)
    sent = up.requests[-1].json
    top, _, sub = param.partition(".")
    assert (sent[top][sub] if sub else sent[top]) is not None


def test_gemini_text_modality_still_crosses(gclient: genai.Client, up: FakeUpstream) -> None:
    cfg = types.GenerateContentConfig(response_modalities=["TEXT"], response_logprobs=False)
    for wire in OTHERS["gemini"]:
        gclient.models.generate_content(model=f"via-{wire}", contents="hi", config=cfg)
    assert len(up.requests) == 3


def test_no_traceback_in_the_gateway_log(gateway: GatewayProcess) -> None:
    assert_clean_log(gateway)


# --- a JSON schema's description (it tells the model what the answer is for) ----------------------

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
HINT = "The city the user asked about, in English"


def test_json_schema_description_reaches_both_openai_wires(oai: OpenAI, up: FakeUpstream) -> None:
    chat_format = {"type": "json_schema", "json_schema": {"name": "place", "description": HINT, "schema": SCHEMA}}
    for model in ("via-openai_chat", "via-openai_responses"):
        oai.chat.completions.create(model=model, messages=USER, response_format=chat_format)
        oai.responses.create(model=model, input="hi", text={"format": {
            "type": "json_schema", "name": "place", "description": HINT, "schema": SCHEMA}})
    chat, chat_from_resp, resp_from_chat, resp = (r.json for r in up.requests)
    assert chat["response_format"]["json_schema"]["description"] == HINT
    assert chat_from_resp["response_format"]["json_schema"]["description"] == HINT
    assert resp_from_chat["text"]["format"]["description"] == HINT
    assert resp["text"]["format"]["description"] == HINT


def test_json_schema_description_reaches_anthropic_and_gemini_in_the_schema(oai: OpenAI, up: FakeUpstream) -> None:
    chat_format = {"type": "json_schema", "json_schema": {"name": "place", "description": HINT, "schema": SCHEMA}}
    for model in ("via-anthropic_messages", "via-gemini"):
        oai.chat.completions.create(model=model, messages=USER, response_format=chat_format)
    anthropic_body, gemini_body = (r.json for r in up.requests)
    assert anthropic_body["output_config"]["format"]["schema"] == {**SCHEMA, "description": HINT}
    assert gemini_body["generationConfig"]["responseJsonSchema"] == {**SCHEMA, "description": HINT}


def test_verbosity_crosses_between_the_openai_wires(oai: OpenAI, up: FakeUpstream) -> None:
    """Chat `verbosity` and Responses `text.verbosity` are one setting (GPT-5's answer length). A Chat
    upstream other than OpenAI's own API (this fake one) does not get it: compatible servers refuse the
    field (tests/test_review_s7c.py; OpenAI itself gets it there)."""
    oai.chat.completions.create(model="via-openai_responses", messages=USER, verbosity="low")
    oai.responses.create(model="via-openai_chat", input="hi", text={"verbosity": "high"})
    to_responses, to_chat = (r.json for r in up.requests)
    assert to_responses["text"] == {"verbosity": "low"} and "verbosity" not in to_responses
    assert "verbosity" not in to_chat and "text" not in to_chat


# --- Anthropic adaptive thinking (the default of Claude Code on recent models) --------------------


def test_adaptive_thinking_asks_other_wires_for_reasoning(claude: anthropic.Anthropic, up: FakeUpstream) -> None:
    """`thinking: {"type": "adaptive"}` lets Claude decide how much to think; another wire was asked
    for no reasoning at all (a Gemini model's thoughts were not even returned)."""
    for wire in OTHERS["anthropic_messages"]:
        claude.messages.create(model=f"via-{wire}", max_tokens=4000, messages=USER, thinking={"type": "adaptive"})
    chat, responses, gemini = (r.json for r in up.requests)
    assert chat["reasoning_effort"] == "medium"
    assert responses["reasoning"] == {"effort": "medium", "summary": "auto"}  # the thinking is to be shown
    assert "reasoning.encrypted_content" in responses["include"]
    assert gemini["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 8192, "includeThoughts": True}
    # An explicit effort still wins.
    claude.messages.create(model="via-openai_chat", max_tokens=4000, messages=USER, thinking={"type": "adaptive"},
                           output_config={"effort": "low"})
    assert up.requests[-1].json["reasoning_effort"] == "low"
    claude.messages.create(model="via-anthropic_messages", max_tokens=4000, messages=USER,
                           thinking={"type": "adaptive"})
    sent = up.requests[-1].json
    assert sent["thinking"] == {"type": "adaptive"} and "output_config" not in sent, "same wire: as sent"


# --- answers the gateway cannot relay: refused up front on every wire, not answered empty ----------


def test_audio_output_is_a_400_on_every_wire(oai: OpenAI, up: FakeUpstream) -> None:
    """An audio answer's content is null and its audio was dropped: the client got an empty, billed
    answer (and the transcript never passed the gateway's hooks)."""
    for wire in ALL_WIRES:
        _refused_openai("modalities", oai.chat.completions.create, model=f"via-{wire}", messages=USER,
                        modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"})
        _refused_openai("audio", oai.chat.completions.create, model=f"via-{wire}", messages=USER,
                        audio={"voice": "alloy", "format": "wav"})
    assert not up.requests


def test_streamed_logprobs_are_a_400_on_another_wire(oai: OpenAI, gclient: genai.Client, up: FakeUpstream) -> None:
    """Another wire's stream carries no log probabilities (every chunk said null). A Chat or Gemini client's
    stream from an upstream of its wire does carry them (tests/test_chat_stream_logprobs.py,
    tests/test_logprobs_same_wire.py)."""
    for wire in ALL_WIRES:
        if wire != "openai_chat":
            _refused_openai("logprobs", oai.chat.completions.create, model=f"via-{wire}", messages=USER,
                            logprobs=True, stream=True)
        if wire == "gemini":
            continue
        with pytest.raises(genai_errors.ClientError) as info:
            for _ in gclient.models.generate_content_stream(
                    model=f"via-{wire}", contents="hi", config=types.GenerateContentConfig(response_logprobs=True)):
                pass
        assert info.value.code == 400 and "'generationConfig.responseLogprobs'" in info.value.message
    assert not up.requests


def test_responses_logprobs_are_a_400_on_another_wire(oai: OpenAI, up: FakeUpstream) -> None:
    """Only a Responses upstream's answer carries them (tests/test_logprobs_same_wire.py)."""
    for wire in OTHERS["openai_responses"]:
        _refused_openai("include", oai.responses.create, model=f"via-{wire}", input="hi", top_logprobs=3,
                        include=["message.output_text.logprobs"])
    assert not up.requests
    oai.responses.create(model="via-openai_responses", input="hi", top_logprobs=3,
                         include=["message.output_text.logprobs"])
    assert up.requests[-1].json["include"] == ["message.output_text.logprobs"]
    oai.responses.create(model="via-openai_responses", input="hi", top_logprobs=3,
                         include=["reasoning.encrypted_content"])  # nothing asked back: fine


def test_chat_url_citations_reach_a_chat_client_of_a_chat_upstream(oai: OpenAI, up: FakeUpstream) -> None:
    answer = openai_completion("Paris news, from X.")
    cite = {"type": "url_citation", "url_citation": {"url": "https://x.example/", "title": "X", "start_index": 16,
                                                     "end_index": 17}}
    answer["choices"][0]["message"]["annotations"] = [cite]
    up.enqueue(Reply.json(answer))
    msg = oai.chat.completions.create(model="via-openai_chat", messages=USER, web_search_options={}).choices[0].message
    assert msg.content == "Paris news, from X."
    assert [a.model_dump() for a in msg.annotations] == [cite]


def test_gemini_part_fields_reach_a_gemini_upstream(gclient: genai.Client, up: FakeUpstream) -> None:
    """A video part's `videoMetadata` (the clip and frame rate to read) and a part's `mediaResolution`
    were dropped on the way to Gemini itself: the whole video was read instead of the clip."""
    video = types.Part(file_data=types.FileData(file_uri="gs://bucket/talk.mp4", mime_type="video/mp4"),
                       video_metadata=types.VideoMetadata(start_offset="10s", end_offset="20s", fps=0.5))
    image = types.Part(inline_data=types.Blob(data=b"\x89PNG", mime_type="image/png"),
                       media_resolution=types.PartMediaResolution(level="MEDIA_RESOLUTION_HIGH"))
    gclient.models.generate_content(model="via-gemini", contents=[types.Content(role="user", parts=[
        types.Part(text="What is said here?"), video, image])])
    parts = up.requests[-1].json["contents"][0]["parts"]
    assert parts[1]["videoMetadata"] == {"startOffset": "10s", "endOffset": "20s", "fps": 0.5}
    assert parts[1]["fileData"] == {"mimeType": "video/mp4", "fileUri": "gs://bucket/talk.mp4"}
    assert parts[2]["mediaResolution"] == {"level": "MEDIA_RESOLUTION_HIGH"}


def test_responses_function_tool_fields_reach_a_responses_upstream(oai: OpenAI, up: FakeUpstream) -> None:
    """Fields of a function tool beyond name/description/parameters/strict (`output_schema`,
    `allowed_callers`, `defer_loading`) were dropped on the way to a Responses upstream."""
    tool = {"type": "function", "name": "get_weather", "description": "Weather", "strict": False,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "output_schema": {"type": "object", "properties": {"celsius": {"type": "number"}}},
            "allowed_callers": ["direct"], "defer_loading": False}
    oai.responses.create(model="via-openai_responses", input="hi", tools=[tool])
    assert up.requests[-1].json["tools"] == [tool]
    oai.responses.create(model="via-openai_chat", input="hi", tools=[tool])
    assert up.requests[-1].json["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather", "strict": False, "parameters": tool["parameters"]}}]


def test_gemini_include_thoughts_alone_asks_other_wires_for_reasoning(gclient: genai.Client,
                                                                     up: FakeUpstream) -> None:
    """`includeThoughts` with no budget is Gemini's default dynamic thinking, shown: an Anthropic upstream
    was asked for no thinking at all, so the client's thoughts never came."""
    cfg = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True),
                                      max_output_tokens=20000)
    for wire in OTHERS["gemini"]:
        gclient.models.generate_content(model=f"via-{wire}", contents="hi", config=cfg)
    by_path = {r.path: r.json for r in up.requests}
    assert by_path["/v1/messages"]["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert by_path["/v1/chat/completions"]["reasoning_effort"] == "medium"
    assert by_path["/v1/responses"]["reasoning"] == {"effort": "medium", "summary": "auto"}
    gclient.models.generate_content(model="via-gemini", contents="hi", config=cfg)
    assert up.requests[-1].json["generationConfig"]["thinkingConfig"] == {"includeThoughts": True}, "as sent"


def test_url_citations_are_dropped_when_a_hook_rewrote_the_text() -> None:
    """Citations index into the content: after a redaction they would point at the wrong characters."""
    from routeplane.language_model.routing import RoutingTarget
    from routeplane.language_model.types import Prompt, TextPart
    from routeplane.protocols.openai_chat.response import decode_response, encode_response

    answer = openai_completion("Call 555-0100, says X.")
    cite = {"type": "url_citation", "url_citation": {"url": "https://x.example/", "title": "X", "start_index": 20,
                                                     "end_index": 21}}
    answer["choices"][0]["message"]["annotations"] = [cite]
    gen = decode_response(answer, RoutingTarget("p", "m", "openai_chat"))
    prompt = Prompt("m", (), extras_protocol="openai_chat")
    assert encode_response(gen, prompt)["choices"][0]["message"]["annotations"] == [cite]
    redacted = dataclasses.replace(gen, parts=(TextPart("Call [redacted], says X."),))
    assert encode_response(redacted, prompt)["choices"][0]["message"]["annotations"] == []


def _decl(name: str) -> types.FunctionDeclaration:
    return types.FunctionDeclaration(name=name, description=f"Tool {name}",
                                     parameters_json_schema={"type": "object", "properties": {}})


def test_gemini_validated_mode_keeps_its_allowed_functions(gclient: genai.Client, up: FakeUpstream) -> None:
    """VALIDATED with allowedFunctionNames was read as plain AUTO: the allowed names were dropped (the
    model could call any tool) and a Gemini upstream lost the schema-validated mode."""
    cfg = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[_decl("a"), _decl("b"), _decl("c")])],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
            mode="VALIDATED", allowed_function_names=["a", "b"])),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    for wire in ALL_WIRES:
        gclient.models.generate_content(model=f"via-{wire}", contents="hi", config=cfg)
    by_path = {r.path.split(":")[0].rsplit("/", 1)[-1]: r.json for r in up.requests}
    assert [t["function"]["name"] for t in by_path["completions"]["tools"]] == ["a", "b"]
    assert by_path["completions"]["tool_choice"] == "auto"
    assert [t["name"] for t in by_path["messages"]["tools"]] == ["a", "b"]
    assert [t["name"] for t in by_path["responses"]["tools"]] == ["a", "b"]
    gemini = by_path["up-gemini"]
    assert [d["name"] for d in gemini["tools"][0]["functionDeclarations"]] == ["a", "b"]
    assert gemini["toolConfig"] == {"functionCallingConfig": {"mode": "VALIDATED"}}

"""E2E under gunicorn: the official openai Responses and google-genai clients against upstreams of every other wire."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List

import pytest
import requests
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from openai import BadRequestError, OpenAI

from routeplane.language_model.routing import RoutingTarget
from tests.support.gateway import GatewayProcess
from tests.support.upstream import FakeUpstream, Reply
from tests.support.wires import CACHED, INPUT, OUTPUT, via_wires_config, weather_upstream

pytestmark = pytest.mark.e2e

WIRES = ("openai_chat", "anthropic_messages", "openai_responses", "gemini")
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                  "additionalProperties": False}


@pytest.fixture(scope="module")
def upstream_all() -> Iterator[FakeUpstream]:
    up = FakeUpstream().start()
    up.default = weather_upstream
    yield up
    up.stop()


@pytest.fixture(scope="module")
def gateway(upstream_all: FakeUpstream) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(via_wires_config(upstream_all.url, WIRES)).start()
    yield gw
    gw.stop()


def _last_request(up: FakeUpstream, wire: str) -> Dict[str, Any]:
    marker = {"openai_chat": "/chat/completions", "anthropic_messages": "/v1/messages",
              "openai_responses": "/v1/responses", "gemini": "Content"}[wire]
    return [r for r in up.requests if marker in r.path][-1]


# --- OpenAI Responses client -------------------------------------------------


RESP_TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather", "parameters": WEATHER_SCHEMA,
               "strict": True}]


@pytest.mark.parametrize("wire", WIRES)
def test_responses_create_text(oai: OpenAI, wire: str) -> None:
    r = oai.responses.create(model=f"via-{wire}", input="hi", instructions="Be terse.")
    assert r.status == "completed"
    assert r.output_text == f"Hello from {wire}."
    assert r.usage.input_tokens == INPUT
    assert r.usage.input_tokens_details.cached_tokens == CACHED
    assert r.usage.output_tokens == OUTPUT
    assert r.usage.total_tokens == INPUT + OUTPUT


@pytest.mark.parametrize("wire", WIRES)
def test_responses_stream_text(oai: OpenAI, wire: str) -> None:
    deltas: List[str] = []
    seqs: List[int] = []
    with oai.responses.stream(model=f"via-{wire}", input="hi") as stream:
        for event in stream:
            seqs.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == f"Hello from {wire}."
    assert seqs == list(range(len(seqs)))
    assert final.output_text == f"Hello from {wire}."
    assert final.usage.input_tokens == INPUT and final.usage.output_tokens == OUTPUT
    assert final.usage.input_tokens_details.cached_tokens == CACHED


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("wire", WIRES)
def test_responses_function_call_round_trip(oai: OpenAI, upstream_all: FakeUpstream, wire: str, stream: bool) -> None:
    history: List[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        with oai.responses.stream(model=f"via-{wire}", input=history, tools=RESP_TOOLS) as s:
            first = s.get_final_response()
    else:
        first = oai.responses.create(model=f"via-{wire}", input=history, tools=RESP_TOOLS)
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    history += [o.model_dump(exclude_none=True) for o in first.output]
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C"})
    second = oai.responses.create(model=f"via-{wire}", input=history, tools=RESP_TOOLS)
    assert second.output_text == "It is 18C."
    sent = _last_request(upstream_all, wire).json
    # The upstream saw the call and its result paired, in its own dialect.
    assert "18C" in json.dumps(sent) and "get_weather" in json.dumps(sent)


def test_responses_previous_response_id_is_a_clear_400(oai: OpenAI) -> None:
    with pytest.raises(BadRequestError) as exc:
        oai.responses.create(model="via-openai_chat", input="more", previous_response_id="resp_123")
    assert "stateless" in exc.value.message
    assert exc.value.body["param"] == "previous_response_id"


# --- google-genai client -------------------------------------------------------


GE_TOOLS = [types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="Weather", parameters_json_schema=WEATHER_SCHEMA)])]
NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)


@pytest.mark.parametrize("wire", WIRES)
def test_genai_generate_content_text(gclient: genai.Client, upstream_all: FakeUpstream, wire: str) -> None:
    r = gclient.models.generate_content(model=f"via-{wire}", contents="hi",
                                        config=types.GenerateContentConfig(system_instruction="Be terse.",
                                                                           max_output_tokens=64))
    assert r.text == f"Hello from {wire}."
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.usage_metadata.prompt_token_count == INPUT
    assert r.usage_metadata.cached_content_token_count == CACHED
    assert r.usage_metadata.candidates_token_count == OUTPUT
    assert r.usage_metadata.total_token_count == INPUT + OUTPUT
    sent = json.dumps(_last_request(upstream_all, wire).json)
    assert "Be terse." in sent


@pytest.mark.parametrize("model", ["../../v1beta/cachedContents?", "a/../../../evil?x=1#", "a//b", "."])
def test_a_client_named_gemini_model_cannot_leave_the_models_path(gateway: GatewayProcess, upstream_all: FakeUpstream,
                                                                   model: str) -> None:
    """The upstream model goes into a Gemini URL: a client naming it must not pick another path for the operator's key."""
    before = len(upstream_all.requests)
    r = requests.post(gateway.url + "/v1/chat/completions", timeout=10,
                      json={"model": f"up_gemini:{model}", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code in (400, 404), r.text
    assert r.json()["error"]["message"]
    sent = [q.path for q in upstream_all.requests[before:]]
    assert all(p.startswith("/v1beta/models/") and "evil" not in p and "cachedContents" not in p for p in sent), sent


def test_odd_characters_in_a_gemini_model_stay_inside_its_path_segment(gateway: GatewayProcess,
                                                                      upstream_all: FakeUpstream) -> None:
    r = requests.post(gateway.url + "/v1/chat/completions", timeout=10, json={
        "model": "up_gemini:x:streamGenerateContent?alt=sse&y=", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert upstream_all.requests[-1].path == "/v1beta/models/x%3AstreamGenerateContent%3Falt%3Dsse%26y%3D:generateContent"
    from routeplane.protocols import gemini
    target = RoutingTarget("g", "x:streamGenerateContent?alt=sse#", "gemini", base_url=upstream_all.url, api_key="k")
    url = gemini.PROVIDER.url(target, stream=False)
    assert url == upstream_all.url + "/v1beta/models/x%3AstreamGenerateContent%3Falt%3Dsse%23:generateContent"
    tuned = RoutingTarget("g", "tunedModels/my-model", "gemini", base_url=upstream_all.url, api_key="k")
    assert gemini.PROVIDER.url(tuned, stream=True).endswith("/v1beta/tunedModels/my-model:streamGenerateContent?alt=sse")


def test_genai_sampling_settings_as_the_sdk_types_them(gclient: genai.Client, upstream_all: FakeUpstream) -> None:
    """google-genai types `top_k` as a float, so it sends `4.0`: an integer to Gemini's JSON mapping."""
    r = gclient.models.generate_content(model="via-gemini", contents="hi",
                                        config=types.GenerateContentConfig(top_k=4, max_output_tokens=64, seed=7))
    assert r.text == "Hello from gemini."
    gen = _last_request(upstream_all, "gemini").json["generationConfig"]
    assert gen["topK"] == 4 and isinstance(gen["topK"], int) and gen["seed"] == 7
    with pytest.raises(genai_errors.ClientError) as exc:
        gclient.models.generate_content(model="via-gemini", contents="hi",
                                        config=types.GenerateContentConfig(top_k=4.5))
    assert exc.value.code == 400 and "generationConfig.topK" in str(exc.value)


@pytest.mark.parametrize("wire", WIRES)
def test_genai_generate_content_stream_text(gclient: genai.Client, wire: str) -> None:
    chunks = list(gclient.models.generate_content_stream(model=f"via-{wire}", contents="hi"))
    assert "".join(c.text or "" for c in chunks) == f"Hello from {wire}."
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    usage = chunks[-1].usage_metadata
    assert usage.prompt_token_count == INPUT and usage.candidates_token_count == OUTPUT
    assert usage.cached_content_token_count == CACHED


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("wire", WIRES)
def test_genai_function_call_round_trip(gclient: genai.Client, upstream_all: FakeUpstream, wire: str,
                                        stream: bool) -> None:
    config = types.GenerateContentConfig(tools=GE_TOOLS, automatic_function_calling=NO_AFC)
    contents: List[Any] = [types.Content(role="user", parts=[types.Part(text="Weather in Paris?")])]
    if stream:
        chunks = list(gclient.models.generate_content_stream(model=f"via-{wire}", contents=contents, config=config))
        model_parts = [p for c in chunks for p in (c.candidates[0].content.parts or []) if c.candidates]
        model_turn = types.Content(role="model", parts=model_parts)
    else:
        r = gclient.models.generate_content(model=f"via-{wire}", contents=contents, config=config)
        model_turn = r.candidates[0].content
    calls = [p.function_call for p in model_turn.parts if p.function_call]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].args == {"city": "Paris"}
    contents += [model_turn, types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
        id=calls[0].id, name="get_weather", response={"output": "18C"}))])]
    r2 = gclient.models.generate_content(model=f"via-{wire}", contents=contents, config=config)
    assert r2.text == "It is 18C."
    sent = _last_request(upstream_all, wire).json
    assert "18C" in json.dumps(sent)
    if wire == "gemini":
        # Gemini gave no id: none is invented on its own wire, and the response goes back without one.
        assert calls[0].id is None
        fr = sent["contents"][-1]["parts"][0]["functionResponse"]
        assert "id" not in fr and fr["name"] == "get_weather"


def test_genai_errors_are_google_shaped(gclient: genai.Client, gateway: GatewayProcess) -> None:
    with pytest.raises(genai_errors.ClientError) as exc:
        gclient.models.generate_content(model="no-such-model", contents="hi")
    assert exc.value.code == 404 and exc.value.status == "NOT_FOUND"
    r = requests.post(gateway.url + "/v1beta/models/via-gemini:generateContent?key=k", data=b"{not json",
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["status"] == "INVALID_ARGUMENT" and r.json()["error"]["code"] == 400


def test_gemini_stream_frames_are_only_data_lines(gateway: GatewayProcess) -> None:
    """google-genai breaks on `event:` lines and comments: the stream must be `data:` lines only."""
    with requests.post(gateway.url + "/v1beta/models/via-anthropic_messages:streamGenerateContent?alt=sse",
                       json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
                       headers={"x-goog-api-key": "k"}, stream=True, timeout=10) as r:
        body = r.content.decode()
    lines = [line for line in body.replace("\r\n", "\n").split("\n") if line]
    assert lines and all(line.startswith("data: {") for line in lines)


def test_gemini_upstream_cut_without_finish_reason_is_an_error(gateway: GatewayProcess,
                                                               upstream_all: FakeUpstream) -> None:
    from tests.support.wires import gemini_sse

    upstream_all.enqueue(gemini_sse([{"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]},
                                                      "index": 0}]}]))
    client = OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
    try:
        events = list(client.responses.create(model="via-gemini", input="hi", stream=True))
    finally:
        client.close()
    kinds = [e.type for e in events]
    assert "response.completed" not in kinds
    assert kinds[-2:] == ["error", "response.failed"]


def test_upstream_key_goes_in_the_gemini_header(upstream_all: FakeUpstream, gclient: genai.Client) -> None:
    gclient.models.generate_content(model="via-gemini", contents="hi")
    req = _last_request(upstream_all, "gemini")
    assert req.headers["x-goog-api-key"] == "sk-up-gemini-secret"
    assert req.path == "/v1beta/models/up-gemini:generateContent"
    upstream_all.enqueue(Reply.json({"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
                                               "details": [{"reason": "API_KEY_INVALID"}]}}, 400))
    with pytest.raises(genai_errors.APIError) as exc:
        gclient.models.generate_content(model="via-gemini", contents="hi")
    # The gateway's own provider key is wrong: not the client's fault, and never echoed.
    assert exc.value.code == 502
    assert "sk-up" not in str(exc.value)


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return "18C"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("wire", WIRES)
def test_genai_chat_with_automatic_function_calling(gclient: genai.Client, wire: str, stream: bool) -> None:
    """google-genai's chat helper calls the Python function itself and keeps the turn in its history
    (it drops a streamed turn if any chunk has no parts)."""
    chat = gclient.chats.create(model=f"via-{wire}", config=types.GenerateContentConfig(tools=[get_weather]))
    if stream:
        text = "".join(c.text or "" for c in chat.send_message_stream("Weather in Paris?"))
    else:
        text = chat.send_message("Weather in Paris?").text
    assert "18C" in text
    history = chat.get_history(curated=True)
    assert history[0].role == "user" and history[-1].role == "model"
    assert "18C" in "".join(p.text or "" for p in history[-1].parts)


def test_genai_count_tokens(gclient: genai.Client) -> None:
    assert gclient.models.count_tokens(model="via-gemini", contents="x" * 40).total_tokens == 10


def test_genai_models_list_and_get(gclient: genai.Client) -> None:
    names = [m.name for m in gclient.models.list()]
    assert "models/via-gemini" in names and "models/via-openai_chat" in names
    model = gclient.models.get(model="via-anthropic_messages")
    assert model.name == "models/via-anthropic_messages"
    assert "generateContent" in model.supported_actions
    with pytest.raises(genai_errors.ClientError) as exc:
        gclient.models.get(model="no-such-model")
    assert exc.value.code == 404


@pytest.mark.parametrize("client_wire", ["openai_chat", "openai_responses", "gemini"])
def test_streamed_usage_reaches_the_client_when_the_upstream_reports_none(
        gateway: GatewayProcess, upstream_all: FakeUpstream, oai: OpenAI, gclient: genai.Client,
        client_wire: str) -> None:
    """An OpenAI-compatible upstream that ignores include_usage: clients still get (estimated) usage."""
    from tests.support.upstream import openai_chunk

    upstream_all.enqueue(Reply.sse([openai_chunk({"role": "assistant", "content": ""}),
                                    openai_chunk({"content": "twelve chars"}), openai_chunk({}, "stop")]))
    if client_wire == "openai_chat":
        chunks = list(oai.chat.completions.create(model="via-openai_chat", messages=[{"role": "user", "content": "hi"}],
                                                  stream=True, stream_options={"include_usage": True}))
        usage = chunks[-1].usage
        assert usage.prompt_tokens > 0 and usage.completion_tokens == 3
    elif client_wire == "openai_responses":
        with oai.responses.stream(model="via-openai_chat", input="hi") as s:
            final = s.get_final_response()
        assert final.usage.input_tokens > 0 and final.usage.output_tokens == 3
    else:
        chunks = list(gclient.models.generate_content_stream(model="via-openai_chat", contents="hi"))
        meta = chunks[-1].usage_metadata
        assert meta.prompt_token_count > 0 and meta.candidates_token_count == 3


def _anthropic_thinking_then_call() -> Reply:
    return Reply.json({"id": "msg_t", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "tool_use",
                       "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 20},
                       "content": [{"type": "thinking", "thinking": "Need the tool.", "signature": "sig-AN-1"},
                                   {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                    "input": {"city": "Paris"}}]})


def _anthropic_text(text: str) -> Reply:
    return Reply.json({"id": "msg_u", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "end_turn",
                       "stop_sequence": None, "usage": {"input_tokens": 30, "output_tokens": 5},
                       "content": [{"type": "text", "text": text}]})


def _signed_thinking_sent(up: FakeUpstream) -> Any:
    sent = _last_request(up, "anthropic_messages").json
    assert sent.get("thinking", {}).get("type") == "enabled", "thinking stays on for the continued tool loop"
    return sent["messages"][1]["content"][0]


def test_responses_client_continues_an_anthropic_thinking_tool_loop(oai: OpenAI, upstream_all: FakeUpstream) -> None:
    """Anthropic's signed thinking rides in encrypted_content and comes back as Anthropic's thinking block."""
    upstream_all.enqueue(_anthropic_thinking_then_call(), _anthropic_text("18C in Paris."))
    history: List[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = oai.responses.create(model="via-anthropic_messages", input=history, tools=RESP_TOOLS,
                                 reasoning={"effort": "low"})
    assert [o.type for o in first.output] == ["reasoning", "function_call"]
    assert "sig-AN-1" not in (first.output[0].encrypted_content or "")
    history += [o.model_dump(exclude_none=True) for o in first.output]
    history.append({"type": "function_call_output", "call_id": "toolu_1", "output": "18C"})
    second = oai.responses.create(model="via-anthropic_messages", input=history, tools=RESP_TOOLS,
                                  reasoning={"effort": "low"})
    assert second.output_text == "18C in Paris."
    assert _signed_thinking_sent(upstream_all) == {"type": "thinking", "thinking": "Need the tool.",
                                                  "signature": "sig-AN-1"}


def test_genai_chat_continues_an_anthropic_thinking_tool_loop(gclient: genai.Client,
                                                             upstream_all: FakeUpstream) -> None:
    """The same through google-genai's chat: the signature rides in a thought part's thoughtSignature."""
    upstream_all.enqueue(_anthropic_thinking_then_call(), _anthropic_text("18C in Paris."))
    config = types.GenerateContentConfig(tools=GE_TOOLS, automatic_function_calling=NO_AFC,
                                         thinking_config=types.ThinkingConfig(include_thoughts=True,
                                                                              thinking_budget=2048))
    chat = gclient.chats.create(model="via-anthropic_messages", config=config)
    first = chat.send_message("Weather in Paris?")
    call = first.function_calls[0]
    second = chat.send_message(types.Part(function_response=types.FunctionResponse(
        id=call.id, name=call.name, response={"output": "18C"})))
    assert second.text == "18C in Paris."
    assert _signed_thinking_sent(upstream_all) == {"type": "thinking", "thinking": "Need the tool.",
                                                  "signature": "sig-AN-1"}


def _gemini_counting_stream() -> Reply:
    from tests.support.wires import gemini_sse

    def chunk(text: str, done: int, finish: bool = False) -> Dict[str, Any]:
        cand: Dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
        if finish:
            cand["finishReason"] = "STOP"
        return {"candidates": [cand], "modelVersion": "up-gemini", "responseId": "r-up",
                "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": done, "totalTokenCount": 11 + done}}

    return gemini_sse([chunk("One ", 1), chunk("two ", 2), chunk("three.", 3, finish=True)])


def test_gemini_upstream_usage_reaches_clients_as_it_streams(gateway: GatewayProcess, upstream_all: FakeUpstream,
                                                             gclient: genai.Client) -> None:
    """Gemini sends usageMetadata on every chunk (cumulative). Before, only the last chunk to a Gemini
    client had it, and an Anthropic client's message_start counted an estimate, not the 11 input tokens."""
    import anthropic

    upstream_all.enqueue(_gemini_counting_stream())
    chunks = list(gclient.models.generate_content_stream(model="via-gemini", contents="count"))
    assert "".join(c.text or "" for c in chunks) == "One two three."
    assert [c.usage_metadata.prompt_token_count if c.usage_metadata else None for c in chunks] == [11] * len(chunks)
    assert chunks[-1].usage_metadata.candidates_token_count == 3

    upstream_all.enqueue(_gemini_counting_stream())
    client = anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0)
    with client.messages.stream(model="via-gemini", max_tokens=50,
                                messages=[{"role": "user", "content": "count"}]) as s:
        events = list(s)
    start = next(e for e in events if e.type == "message_start")
    assert start.message.usage.input_tokens == 11
    assert s.get_final_message().usage.output_tokens == 3

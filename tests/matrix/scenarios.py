"""The scenarios every (client wire × upstream wire) cell runs, in wire-neutral terms."""

from __future__ import annotations

from typing import Tuple

from tests.matrix.model import (
    Failure,
    Image,
    Reasoning,
    Reply,
    Scenario,
    ToolCall,
    ToolResult,
    ToolSpec,
    Turn,
    Usage,
)

WEATHER = ToolSpec(
    "get_weather", "Current weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]},
)
ASK = Turn("user", "Weather in Paris and Rome?")
PARIS = ToolCall("call_paris1", "get_weather", {"city": "Paris", "unit": "c"},
                 ('{"ci', 'ty": "Par', 'is", "un', 'it": "c"}'))
ROME = ToolCall("call_rome2", "get_weather", {"city": "Rome", "unit": "c"},
                ('', '{"city"', ': "Ro', 'me", "unit": "c"', '}'))

SCENARIOS: Tuple[Scenario, ...] = (
    Scenario(
        "plain_text", "plain text",
        turns=(Turn("user", "Say hello."),),
        system="Be terse.",
        reply=Reply("Hello there, friend!", text_fragments=("Hel", "lo there", ", friend!"),
                    usage=Usage(input=12, output=5)),
    ),
    Scenario(
        "images", "images (base64 and URL)",
        turns=(Turn("user", "What is in these?", images=(
            Image(media_type="image/png", data="iVBORw0KGgoAAAANSUhEUg=="),
            Image(url="https://example.com/cat.jpg"))),),
        reply=Reply("A dot and a cat.", usage=Usage(input=900, output=6)),
        requires=("images",),
    ),
    Scenario(
        "consecutive_same_role", "consecutive same-role messages",
        turns=(Turn("user", "Part one. "), Turn("user", "Part two."), Turn("assistant", "Noted. "),
               Turn("assistant", "Anything else?"), Turn("user", "No.")),
        reply=Reply("Bye.", usage=Usage(input=20, output=2)),
        requires=("same_role_turns",),
    ),
    Scenario(
        "multi_turn_tools", "multi-turn with tool results",
        turns=(
            ASK,
            Turn("assistant", "Checking both.", calls=(PARIS, ROME)),
            Turn("tool", results=(ToolResult("call_paris1", "18C"), ToolResult("call_rome2", "Error: timeout", True))),
            Turn("user", "And tomorrow?"),
        ),
        tools=(WEATHER,), tool_choice="auto",
        reply=Reply("Probably similar.", usage=Usage(input=80, output=4)),
    ),
    Scenario(
        "parallel_tool_calls", "parallel tool calls streamed in fragments",
        turns=(ASK,), tools=(WEATHER,),
        reply=Reply("", calls=(PARIS, ROME), finish="tool_calls", usage=Usage(input=40, output=30)),
    ),
    Scenario(
        "parallel_tool_calls_interleaved", "parallel tool calls, fragments interleaved across calls",
        turns=(ASK,), tools=(WEATHER,),
        reply=Reply("Let me look.", calls=(PARIS, ROME), finish="tool_calls", usage=Usage(input=40, output=33),
                    interleave=True),
    ),
    Scenario(
        "thinking", "thinking (signature kept on the same wire)",
        turns=(
            Turn("user", "What is 17*23?"),
            Turn("assistant", "391.", reasoning=Reasoning("17*23: 340+51.", "sig-prev-AAA")),
            Turn("user", "And 17*24?"),
        ),
        thinking=True, max_tokens=4096,
        reply=Reply("408.", reasoning=Reasoning("391+17 = 408.", "sig-new-BBB"),
                    usage=Usage(input=30, output=2, reasoning=25)),
    ),
    Scenario(
        "thinking_tool_loop", "thinking before a tool call, continued with its result",
        turns=(
            ASK,
            Turn("assistant", calls=(PARIS,), reasoning=Reasoning("Need the tool.", "sig-tool-CCC")),
            Turn("tool", results=(ToolResult("call_paris1", "18C"),)),
        ),
        tools=(WEATHER,), thinking=True, max_tokens=4096,
        reply=Reply("Paris is 18C.", reasoning=Reasoning("Got it.", "sig-after-DDD"),
                    usage=Usage(input=60, output=6, reasoning=4)),
    ),
    Scenario(
        "cache_usage", "prompt-cache usage buckets",
        turns=(Turn("user", "Summarise the manual."),),
        system="You are a support agent. " * 4, system_cache=True,
        reply=Reply("It explains setup.", usage=Usage(input=40, cache_read=2000, cache_write=100, output=60)),
    ),
    Scenario(
        "stop_sequence", "stop reason: stop sequence",
        turns=(Turn("user", "Count to five."),), stop=("###",),
        reply=Reply("1 2 3", finish="stop_sequence", stop_sequence="###"),
    ),
    Scenario(
        "stop_length", "stop reason: max tokens",
        turns=(Turn("user", "Write an essay."),), max_tokens=5,
        reply=Reply("Once upon a", finish="length"),
    ),
    Scenario(
        "stop_tool_use", "stop reason: tool use (forced)",
        turns=(Turn("user", "Weather in Paris?"),), tools=(WEATHER,), tool_choice="required",
        reply=Reply("", calls=(ToolCall("toolu_01", "get_weather", {"city": "Paris"}),), finish="tool_calls"),
    ),
    Scenario(
        "stop_refusal", "stop reason: refusal / content filter",
        turns=(Turn("user", "Something unsafe."),),
        reply=Reply("I can't help with that.", finish="content_filter"),
    ),
    Scenario(
        "stop_pause", "stop reason: pause turn",
        turns=(Turn("user", "Research this."),),
        reply=Reply("Searching...", finish="pause"),
    ),
    Scenario(
        "error_overloaded", "upstream error: overloaded",
        turns=(Turn("user", "hi"),),
        reply=Reply(failure=Failure("overloaded", "Overloaded")),
    ),
    Scenario(
        "error_rate_limit", "upstream error: rate limited (Retry-After kept)",
        turns=(Turn("user", "hi"),),
        reply=Reply(failure=Failure("rate_limit", "Too many requests", retry_after=7)),
    ),
    Scenario(
        "error_midstream", "upstream error mid-stream",
        turns=(Turn("user", "hi"),),
        reply=Reply("partial answer", text_fragments=("partial ", "answer"),
                    failure=Failure("overloaded", "Overloaded", midstream=True)),
        modes=(True,),
    ),
)

SCENARIOS += (
    Scenario(
        "stream_cut", "upstream stream cut before its terminator",
        turns=(Turn("user", "hi"),),
        reply=Reply("partial answer", text_fragments=("partial ", "answer"),
                    failure=Failure("cut", "cut", midstream=True)),
        modes=(True,), requires=("cut_stream",),
    ),
)

BY_ID = {s.id: s for s in SCENARIOS}

"""The three hooks: upgoing prompt check, downgoing stream check, downgoing non-streaming response check."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from routeplane.errors import GuardrailViolation, StreamAborted
from routeplane.hooks.language_model import (
    DenyReason,
    ExecutionHook,
    HookDecision,
    Outcome,
    PreRequestHook,
    StreamAction,
    StreamHook,
    StreamInterest,
)
from routeplane.language_model.context import PipelineContext
from routeplane.language_model.types import (
    ContentPart,
    Finish,
    Generation,
    Message,
    OpaqueBlock,
    OpaquePart,
    Prompt,
    ReasoningDelta,
    ReasoningEnd,
    ReasoningPart,
    ReasoningStart,
    StreamPart,
    TextAnnotation,
    TextDelta,
    TextEnd,
    TextPart,
    TextStart,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
)
from routeplane.protocols.openai_chat.citations import reaches

from .detectors import DOWNGOING, UPGOING
from .jsontext import find_json, json_spans, looks_like_json
from .offsets import Edit, shifted
from .opaque import JSON, NAME, TEXT, kind, leaves, propagate, rebuild
from .rules import BLOCK, REDACT, DirectionRules, Finding, Reporter, RuleSet, Stats, candidates, find, redact
from .stream import Blocked, ChannelScanner

PLUGIN_ID = "guardrails"
CODE = "guardrail_violation"

Channel = Tuple[str, int]  # ("text" | "tool" | "reasoning", block index)
_START_KIND = {TextStart: "text", ToolCallStart: "tool", ReasoningStart: "reasoning"}
_WHERE = {"text": "text block {}", "tool": "tool call {} arguments", "reasoning": "reasoning block {}"}


class RequestGuard:
    """Per-request state, put in `ctx.extensions` by the pre-request check and read by the stream stage."""

    def __init__(self, ruleset: RuleSet, reporter: Reporter, wire: Optional[str] = None) -> None:
        self.ruleset = ruleset
        self.reporter = reporter
        # The client's wire: a provider's blocks and annotations of another wire never reach the client
        # (its encoder leaves them out; the OpenAI wires relay each other's URL citations), so they keep
        # their place in the stream but are not scanned.
        self.wire = wire
        self.channels: Dict[Channel, ChannelScanner] = {}
        self.custom_tools: Set[int] = set()  # tool calls whose arguments are free text, not JSON
        # Reasoning (signed) is checked, never rewritten: `redact` acts as `warn` on it.
        self.checked_only_rules = ruleset.downgoing.without_redaction()
        # Streamed tool-call names (identifiers) cannot be rewritten either: `redact` acts as `block` on them.
        self.name_rules = ruleset.downgoing.redaction_as_block()
        # Annotations that arrived while their text block held text: (offset in the block, annotation), sent
        # right after that text, so they never overtake it (and get the redactions it had).
        self.notes: Dict[Channel, List[Tuple[int, TextAnnotation]]] = {}

    @classmethod
    def of(cls, ctx: PipelineContext, ruleset: RuleSet, stats: Stats) -> "RequestGuard":
        guard = ctx.extensions.get(cls)
        if guard is None:  # an earlier pre-request hook answered before ours ran
            guard = cls(ruleset, Reporter(stats, ctx.request_id), ctx.inbound_protocol)
            ctx.extensions.put(guard)
        return guard

    def channel(self, key: Channel) -> ChannelScanner:
        scanner = self.channels.get(key)
        if scanner is None:
            rules = self.checked_only_rules if key[0] == "reasoning" else self.ruleset.downgoing
            json = key[0] == "tool" and key[1] not in self.custom_tools
            scanner = ChannelScanner(rules, self.ruleset, self.reporter, _WHERE[key[0]].format(key[1]), json=json)
            self.channels[key] = scanner
        return scanner

    def flush(self, keys: Sequence[Channel]) -> List[StreamPart]:
        out: List[StreamPart] = []
        for key in keys:
            scanner = self.channels.get(key)
            if scanner is not None:
                out.extend(self.release(key, scanner.flush()))
        return out

    def release(self, key: Channel, texts: List[str]) -> List[StreamPart]:
        """A channel's released text as parts, each held annotation right after the text it followed."""
        parts = [_part(key, text) for text in texts]
        held = self.notes.get(key)
        if not held:
            return parts
        scanner = self.channels[key]
        out: List[StreamPart] = []
        for part, end in zip(parts, scanner.piece_ends):
            out.append(part)
            while held and held[0][0] <= end:
                out.append(self.note(held.pop(0)[1]))
        while held and held[0][0] <= scanner.emitted:  # after an empty release, or one merged by a redaction
            out.append(self.note(held.pop(0)[1]))
        return out

    def annotate(self, part: TextAnnotation) -> List[StreamPart]:
        """An annotation of a text block: after the text held before it (of any block); held itself while
        its block holds text."""
        key: Channel = ("text", part.index)
        out = self.flush([k for k in self.channels if k != key])
        scanner = self.channels.get(key)
        if scanner is not None and scanner.total > scanner.emitted:
            self.notes.setdefault(key, []).append((scanner.total, part))
            return out
        return [*out, self.note(part)]

    def note(self, part: TextAnnotation) -> TextAnnotation:
        """An annotation scanned like the text, with the secrets the stream's text lost so far; raises Blocked."""
        if not reaches(part.protocol, self.wire):
            return part
        scan = _Scan(self.ruleset.downgoing, self.reporter)
        scan.secrets = [s for key, channel in self.channels.items() if key[0] == "text" for s in channel.secrets]
        note = scan.opaque(part.annotation, f"text block {part.index} annotation", quotes=True)
        if scan.blocked is not None:
            raise Blocked(*scan.blocked)
        text = self.channels.get(("text", part.index))
        if text is not None:  # offsets into the text as sent so far (see `offsets`; the README says when exact)
            note = shifted(note, part.protocol, text.edits)
        return part if note is part.annotation else dataclasses.replace(part, annotation=note)

    def block(self, part: OpaqueBlock) -> OpaqueBlock:
        """A provider's whole block (see `opaque`): scanned at once (no window: it is complete); raises Blocked."""
        if part.protocol != self.wire:
            return part
        scan = _Scan(self.ruleset.downgoing, self.reporter)
        block = scan.opaque(part.block, f"opaque block {part.index} ({kind(part.block)})")
        if scan.blocked is not None:
            raise Blocked(*scan.blocked)
        return part if block is part.block else dataclasses.replace(part, block=block)

    def finish(self, part: Finish) -> Finish:
        """The ending's own fields for a client of its wire (Anthropic `stop_details`, `container`): scanned as
        an unstreamed answer's are (see `_scan_extras`), at once (they are whole); raises Blocked."""
        if not part.extras or part.wire != self.wire:
            return part
        scan = _Scan(self.ruleset.downgoing, self.reporter)
        extras = _scan_extras(part.extras, scan)
        if scan.blocked is not None:
            raise Blocked(*scan.blocked)
        return part if extras is None else dataclasses.replace(part, extras=extras)

    def check_name(self, name: str, where: str) -> None:
        """A streamed tool call's name: `redact` acts as `block` (see `_Scan.name`); raises Blocked."""
        if name:
            _, blocks = scan_text(name, self.name_rules, self.reporter, where)
            if blocks:
                raise Blocked(blocks, where)

    def record(self, ctx: PipelineContext) -> None:
        if self.reporter.per_request:
            ctx.plugin_metadata(PLUGIN_ID).update(self.reporter.per_request)


def _part(key: Channel, text: str) -> StreamPart:
    if key[0] == "text":
        return TextDelta(key[1], text)
    return ToolCallDelta(key[1], text) if key[0] == "tool" else ReasoningDelta(key[1], text)


def scan_text(text: str, rules: DirectionRules, reporter: Reporter, where: str, json: bool = False,
              secrets: Optional[List[Tuple[str, str]]] = None,
              edits: Optional[List[Edit]] = None) -> Tuple[str, List[Finding]]:
    """A whole text at once: (redacted text, block findings). Every finding is counted and logged.

    `json`: the text is tool-call arguments; if it is JSON, the detectors read it
    decoded (escapes as what they stand for) and redaction keeps it valid JSON (see `jsontext`).
    `secrets`: gets (redacted text, placeholder) of each redaction, for the text's annotations.
    `edits`: gets the replacements made (plain text only), for annotations that index the text.
    """
    json = json and looks_like_json(text)
    findings = find_json(text, rules) if json else find(text, rules)
    for f in findings:
        reporter.report(rules.direction, f, where)
    blocks = [f for f in findings if f.action == BLOCK]
    spans = [(f.red_start, f.red_end, f.placeholder) for f in findings if f.action == REDACT]
    if not spans or blocks:
        return text, blocks
    if secrets is not None:
        secrets.extend((text[s:e], placeholder) for s, e, placeholder in spans)
    return redact(text, json_spans(text, spans) if json else spans, edits=None if json else edits), blocks


class _Scan:
    """Walks content parts, redacting in place and stopping at the first block.

    `wire`: the client's wire, for an answer: a provider's blocks and annotations of another wire
    never reach that client (its encoder leaves them out), so they are not scanned (nor stopped).
    """

    def __init__(self, rules: DirectionRules, reporter: Reporter, wire: Optional[str] = None) -> None:
        self.rules, self.reporter, self.wire = rules, reporter, wire
        self.secrets: List[Tuple[str, str]] = []  # what the text lost so far, for its annotations
        self.blocked: Optional[Tuple[List[Finding], str]] = None
        self._name_rules: Optional[DirectionRules] = None
        self._name_hits: Dict[str, bool] = {}

    def name(self, name: Optional[str], where: str) -> None:
        """A tool, function or message name: checked but never rewritten.

        Names are identifiers (`^[a-zA-Z0-9_-]{1,64}$`, which an API key fits)
        that must match a tool definition: a placeholder inside one would break
        the call, so `redact` acts as `block` on them (counted as `block`) and
        `warn` stays `warn`. Each distinct name is scanned once; one with
        findings is counted and logged wherever it occurs.
        """
        if not name or self.blocked is not None:
            return
        if self._name_rules is None:
            self._name_rules = self.rules.redaction_as_block()
        hit = self._name_hits.get(name)
        if hit is None:
            hit = self._name_hits[name] = bool(find(name, self._name_rules))
        if hit:
            _, blocks = scan_text(name, self._name_rules, self.reporter, where)
            if blocks:
                self.blocked = (blocks, where)

    def text(self, text: str, where: str, json: bool = False, rules: Optional[DirectionRules] = None,
             secrets: Optional[List[Tuple[str, str]]] = None, edits: Optional[List[Edit]] = None) -> str:
        if self.blocked is not None:
            return text
        new, blocks = scan_text(text, self.rules if rules is None else rules, self.reporter, where, json=json,
                                secrets=secrets, edits=edits)
        if blocks:
            self.blocked = (blocks, where)
        return new

    def parts(self, parts: Tuple[ContentPart, ...], where: str) -> Tuple[ContentPart, ...]:
        out: List[ContentPart] = []
        for p in parts:
            if isinstance(p, TextPart):
                edits: List[Edit] = []
                new = self.text(p.text, f"{where} text", secrets=self.secrets, edits=edits)
                p = p if new == p.text else dataclasses.replace(p, text=new)
                if p.annotations and reaches(p.annotations_protocol, self.wire):
                    notes = tuple(shifted(self.opaque(n, f"{where} text annotation", quotes=True),
                                          p.annotations_protocol or "", edits) for n in p.annotations)
                    p = p if notes == p.annotations else dataclasses.replace(p, annotations=notes)
            elif isinstance(p, OpaquePart):
                if self.wire in (None, p.protocol):
                    block = self.opaque(p.block, f"{where} {kind(p.block)}")
                    p = p if block is p.block else dataclasses.replace(p, block=block)
            elif isinstance(p, ToolCallPart):
                self.name(p.name, f"{where} tool call name")
                new = self.text(p.arguments, f"{where} tool call arguments", json=not p.custom)
                p = p if new == p.arguments else dataclasses.replace(p, arguments=new)
            elif isinstance(p, ToolResultPart):
                self.name(p.name, f"{where} tool result name")
                content = self.parts(p.content, f"{where} tool result")
                p = p if content == p.content else dataclasses.replace(p, content=content)
            elif isinstance(p, ReasoningPart) and p.text and self.blocked is None:
                # Signed by its provider: checked (warn/block) but never rewritten.
                _, blocks = scan_text(p.text, self.rules.without_redaction(), self.reporter, f"{where} reasoning")
                if blocks:
                    self.blocked = (blocks, f"{where} reasoning")
            # Images and files are not scanned.
            out.append(p)
        return tuple(out)

    def opaque(self, block: Any, where: str, quotes: bool = False) -> Any:
        """A provider's block, an annotation or a wire's field (see `opaque`): its strings scanned, a redaction
        rebuilt in a copy; its names checked only. `quotes`: an annotation, which also loses the secrets its
        text lost."""
        if self.blocked is not None:
            return block
        found = leaves(block)
        for s, role in found:
            if role == NAME:
                self.name(s, f"{where} name")
        # One trigger check over the plain strings picks the rules that may match any (see `values`); JSON
        # arguments get every rule, as their escapes (`sk-\u0070roj-…`) hide a trigger from that check.
        rules = candidates(self.rules, [s for s, role in found if role == TEXT])
        secrets = self.secrets if quotes else ()
        if not rules and not secrets and all(role != JSON for _, role in found):
            return block
        new = []
        for s, role in found:
            t = s
            if role == JSON:
                t = self.text(s, where, json=True)
            elif role == TEXT:
                t = propagate(self.text(s, where, rules=rules) if rules else s, secrets)
            new.append(s if t == s else t)
        if all(a is b for a, b in zip(new, (s for s, _ in found))):
            return block
        return rebuild(block, iter(new))

    def values(self, fields: Sequence[Tuple[str, Any]]) -> List[Any]:
        """JSON-like values (where, value): every string in them scanned; a value with a redaction is rebuilt.

        Tool schemas hold many short, often repeated strings: one trigger check
        over all of them picks the rules that may match any, only those run, and
        on each distinct string once (a string with findings is scanned, counted
        and logged wherever it occurs).
        """
        if self.blocked is not None:
            return [value for _, value in fields]
        per_field: List[List[str]] = []
        for _, value in fields:
            strings: List[str] = []
            _strings(value, strings)
            per_field.append(strings)
        rules = candidates(self.rules, [s for strings in per_field for s in strings])
        if not rules:
            return [value for _, value in fields]
        hits: Dict[str, bool] = {}
        out: List[Any] = []
        for (where, value), strings in zip(fields, per_field):
            new = []
            for s in strings:
                hit = hits.get(s)
                if hit is None:
                    hit = hits[s] = bool(find(s, rules))
                new.append(self.text(s, where, rules=rules) if hit else s)
            out.append(value if all(a is b for a, b in zip(new, strings)) else rebuild(value, iter(new), _credential_slot))
        return out


class UpgoingCheck(PreRequestHook):
    """Scans everything of the prompt the upstream reads before it sees it.

    System, user, assistant and tool-result text and tool-call arguments; tool
    definitions (description, every string of the parameter schema or custom
    format), the response-format schema and description, stop sequences, `user`, and every
    string of the wire's other fields (`metadata`, `prediction`, ...). Tool,
    tool-call, tool-choice, response-format and message names are checked but
    never rewritten (`redact` acts as `block` on them).
    """

    def __init__(self, ruleset: RuleSet, stats: Stats) -> None:
        self.ruleset, self.stats = ruleset, stats

    def check(self, ctx: PipelineContext) -> HookDecision:
        guard = RequestGuard.of(ctx, self.ruleset, self.stats)
        rules = self.ruleset.upgoing
        if not rules:
            return HookDecision.allow()
        prompt = ctx.prompt
        scan = _Scan(rules, guard.reporter)
        system = scan.parts(prompt.system, "system")
        messages: List[Message] = []
        for i, msg in enumerate(prompt.messages):
            scan.name(msg.name, f"messages[{i}] ({msg.role.value}) name")
            parts = scan.parts(msg.parts, f"messages[{i}] ({msg.role.value})")
            messages.append(msg if parts == msg.parts else dataclasses.replace(msg, parts=parts))
        changes = _scan_fields(prompt, scan)
        for i, tool in enumerate(prompt.tools):
            scan.name(tool.name, f"tools[{i}] name")
        scan.name(prompt.tool_choice.name if prompt.tool_choice is not None else None, "tool_choice name")
        scan.name(prompt.response_format.name if prompt.response_format is not None else None,
                  "response_format name")
        guard.record(ctx)
        if scan.blocked is not None:
            findings, where = scan.blocked
            return HookDecision.deny(
                DenyReason.guardrail_violation(self.ruleset.block_message.render(UPGOING, findings, where)))
        if system != prompt.system or tuple(messages) != prompt.messages or changes:
            ctx.replace_prompt(prompt.replace(system=system, messages=tuple(messages), **changes))
        return HookDecision.allow()


def _scan_fields(prompt: Prompt, scan: _Scan) -> Dict[str, Any]:
    """The prompt's fields besides messages, scanned in one batch: the `Prompt.replace` changes they need."""
    fields: List[Tuple[str, Any]] = []
    for i, tool in enumerate(prompt.tools):
        fields += [(f"tools[{i}] description", tool.description), (f"tools[{i}] parameters", tool.parameters),
                   (f"tools[{i}] format", tool.format)]
    rf = prompt.response_format
    fields += [("response_format schema", rf.schema if rf is not None else None),
               ("response_format description", rf.description if rf is not None else None)]
    fields += [("stop sequences", prompt.params.stop), ("user", prompt.params.user)]
    extras = sorted(prompt.extras)
    fields += [(key if not key.startswith("_") else "other request fields", prompt.extras[key]) for key in extras]
    values = scan.values(fields)
    if all(new is old for new, (_, old) in zip(values, fields)):
        return {}
    it = iter(values)
    changes: Dict[str, Any] = {}
    tools = []
    for tool in prompt.tools:
        description, parameters, fmt = next(it), next(it), next(it)
        tools.append(dataclasses.replace(tool, description=description, parameters=parameters, format=fmt))
    if any(new != old for new, old in zip(tools, prompt.tools)):
        changes["tools"] = tuple(tools)
    schema, description = next(it), next(it)
    if rf is not None and (schema is not rf.schema or description is not rf.description):
        changes["response_format"] = dataclasses.replace(rf, schema=schema, description=description)
    stop, user = next(it), next(it)
    if stop is not prompt.params.stop or user is not prompt.params.user:
        changes["params"] = dataclasses.replace(prompt.params, stop=stop, user=user)
    new_extras = {key: next(it) for key in extras}
    if any(new_extras[key] is not prompt.extras[key] for key in extras):
        changes["extras"] = {key: new_extras.get(key, value) for key, value in prompt.extras.items()}
    return changes


# Values that are a credential handed to the provider on purpose (Anthropic's
# `mcp_servers[].authorization_token`): sending them is the point, so they are not scanned.
_CREDENTIAL_SLOTS = frozenset({"authorization_token", "authorization"})


def _strings(value: Any, out: List[str]) -> None:
    """Every string of a JSON-like value (object keys too), depth first."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str):
                out.append(k)
            if k not in _CREDENTIAL_SLOTS:
                _strings(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _strings(v, out)


def _credential_slot(obj: Mapping[str, Any], key: Any, value: Any) -> bool:
    return key in _CREDENTIAL_SLOTS


class DowngoingStreamCheck(StreamHook):
    """Redacts/blocks streamed text and tool-call arguments, holding back a bounded window per channel."""

    def __init__(self, ruleset: RuleSet, stats: Stats) -> None:
        self.ruleset, self.stats = ruleset, stats

    def interest(self) -> StreamInterest:
        if not self.ruleset.downgoing:
            return StreamInterest.NONE
        return (StreamInterest.TEXT | StreamInterest.TOOL_CALLS | StreamInterest.REASONING | StreamInterest.LIFECYCLE
                | StreamInterest.OPAQUE)

    def on_part(self, ctx: PipelineContext, part: StreamPart) -> StreamAction:
        guard = RequestGuard.of(ctx, self.ruleset, self.stats)
        try:
            if isinstance(part, TextDelta):
                key: Channel = ("text", part.index)
                out = guard.channel(key).feed(part.text)
                if out is not None and guard.notes.get(key):
                    return StreamAction.replace(guard.release(key, out))
                return _deliver(part, part.text, out)
            if isinstance(part, TextAnnotation):
                return StreamAction.replace(guard.annotate(part))
            if isinstance(part, OpaqueBlock):
                # A whole block of its own: held text of the others goes out first, keeping the output order.
                return StreamAction.replace([*guard.flush(list(guard.channels)), guard.block(part)])
            if isinstance(part, ToolCallDelta):
                return _deliver(part, part.arguments, guard.channel(("tool", part.index)).feed(part.arguments))
            if isinstance(part, ReasoningDelta):
                if part.signature is not None or not part.text:
                    # A signature must reach the client after all of the text it signs.
                    return _before(guard.flush([("reasoning", part.index)]), part)
                return _deliver(part, part.text, guard.channel(("reasoning", part.index)).feed(part.text))
            if isinstance(part, ReasoningEnd):
                return _before(guard.flush([("reasoning", part.index)]), part)
            if isinstance(part, TextEnd):
                return _before(guard.flush([("text", part.index)]), part)
            if isinstance(part, ToolCallEnd):
                return _before(guard.flush([("tool", part.index)]), part)
            if isinstance(part, ToolCallStart):
                guard.check_name(part.name, f"tool call {part.index} name")
                if part.custom:
                    guard.custom_tools.add(part.index)  # before its first delta opens the channel
            if isinstance(part, (TextStart, ToolCallStart, ReasoningStart)):
                # Held text of another block goes out first, keeping the output order.
                mine = (_START_KIND[type(part)], part.index)
                return _before(guard.flush([k for k in guard.channels if k != mine]), part)
            if isinstance(part, Finish):
                flushed, finish = guard.flush(list(guard.channels)), guard.finish(part)
                return _before(flushed, part) if finish is part else StreamAction.replace([*flushed, finish])
        except Blocked as blocked:
            message = self.ruleset.block_message.render(DOWNGOING, blocked.findings, blocked.where)
            return StreamAction.abort(StreamAborted(message, status=400, kind="guardrail", code=CODE))
        return StreamAction.pass_()

    def on_stream_end(self, ctx: PipelineContext, outcome: Outcome) -> None:
        guard = ctx.extensions.get(RequestGuard)
        if guard is not None:
            guard.record(ctx)


def _deliver(part: StreamPart, original: str, out: Optional[List[str]]) -> StreamAction:
    if out is None or (len(out) == 1 and out[0] == original):
        return StreamAction.pass_()
    if not out:
        return StreamAction.drop()
    index = part.index  # type: ignore[union-attr]
    make: Any = type(part)  # TextDelta, ToolCallDelta or ReasoningDelta: (index, text)
    return StreamAction.replace([make(index, text) for text in out])


def _before(flushed: List[StreamPart], part: StreamPart) -> StreamAction:
    return StreamAction.replace([*flushed, part]) if flushed else StreamAction.pass_()


class DowngoingResponseCheck(ExecutionHook):
    """Non-streaming responses: returns a redacted Generation, or raises GuardrailViolation to block."""

    def __init__(self, ruleset: RuleSet, stats: Stats) -> None:
        self.ruleset, self.stats = ruleset, stats

    def on_success(self, ctx: PipelineContext, result: Any) -> Optional[Generation]:
        if not isinstance(result, Generation) or not self.ruleset.downgoing:
            return None  # a stream: the stream check sees its parts
        guard = RequestGuard.of(ctx, self.ruleset, self.stats)
        scan = _Scan(self.ruleset.downgoing, guard.reporter, wire=ctx.inbound_protocol)
        parts = scan.parts(result.parts, "response")
        # The upstream wire's own fields reach a client of that wire only (Generation.extras).
        extras = _scan_extras(result.extras, scan) if result.extras_protocol == ctx.inbound_protocol else None
        guard.record(ctx)
        if scan.blocked is not None:
            findings, where = scan.blocked
            raise GuardrailViolation(self.ruleset.block_message.render(DOWNGOING, findings, where), code=CODE)
        if parts == result.parts and extras is None:
            return None
        return dataclasses.replace(result, parts=parts, extras=result.extras if extras is None else extras)


def _scan_extras(extras: Mapping[str, Any], scan: _Scan) -> Optional[Dict[str, Any]]:
    """The upstream wire's fields a same-wire client gets back besides the content (Chat URL citations,
    Gemini grounding, citation and URL-context metadata, Anthropic `stop_details` and `container`, ...),
    every string scanned as in a provider's block (see `opaque`: ids, ciphertext and signatures pass
    unread, as the next turn sends them back): they quote the answer and the URLs it cites, so a secret the
    text lost must not leave there either (a wire drops what indexes the text once the text is rewritten,
    unless moved for it as Chat citations are, but not, e.g., Gemini's retrieved URLs). None when nothing
    changed.

    A `_`-key holding text (Chat `_logprobs_text`, Gemini `_text`) is the wire's copy of the answer as it
    came, compared with the final text to tell whether a hook rewrote it: never scanned nor rewritten, or
    logprobs and grounding that quote the original would be kept.
    """
    keys = [k for k, v in extras.items() if not (k.startswith("_") and _is_text(v))]
    values = [scan.opaque(extras[k], f"response {k.lstrip('_')}") for k in keys]
    if all(new is extras[k] for k, new in zip(keys, values)):
        return None
    return {**extras, **dict(zip(keys, values))}


def _is_text(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value))

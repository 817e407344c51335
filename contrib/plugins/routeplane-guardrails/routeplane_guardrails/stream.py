"""Scanning one streamed channel (a text block, a tool call's arguments) with a bounded hold-back window."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from .detectors import Rule
from .jsontext import LexState, View, advance, bare_end, cut_token, decoded_view, find_json, json_spans
from .offsets import Edit
from .rules import BLOCK, REDACT, DirectionRules, Finding, Reporter, RuleSet, find, redact


class Blocked(Exception):
    """A block rule matched; the hook turns this into the wire's error (never carrying the text)."""

    def __init__(self, findings: Sequence[Finding], where: str) -> None:
        super().__init__(where)
        self.findings = tuple(findings)
        self.where = where


class ChannelScanner:
    """Holds back the last `stream_window` characters of a channel so a match split across chunks is seen whole.

    Text leaves in the chunks it arrived in (so a clean stream is unchanged
    apart from timing); only chunks touched by a redaction are merged and
    rewritten. A match still growing at the end of the buffer (a PEM block)
    holds everything from its start, up to `max_hold_chars`; past that the
    held text is released with the part seen so far redacted, and a rule's
    `continuation` pattern keeps redacting what follows the cut. With only
    `warn` rules nothing is held: chunks pass at once and a carry window of
    the same size is scanned for matches that span chunks.

    Positions are absolute character offsets in the channel; `buf` keeps the
    pending text plus `context_chars` of already-sent text for look-behinds.

    A tool call's arguments are JSON (`json=True`: when they start with `{` or
    `[`): the detectors read it decoded (`\\n`, `\\/`, `\\uXXXX` as what they stand
    for; an escape cut by the end of the buffer is read once whole, and the
    buffer is never trimmed inside one), and redactions keep the JSON valid
    (see `jsontext`). The window and the look-behind context count characters
    as the detectors read them (a `\\uXXXX` is one), so a secret spelled with
    escapes is held as long as its plain spelling; `max_hold_chars` caps the
    text as sent. The JSON lexer state at `base` is kept up
    to date as the buffer is trimmed, so each text is lexed once, and again
    only when something in the buffer is redacted. A forced cut inside a bare
    token (a number) that a redaction touches replaces the whole token: its
    quoted placeholder leaves with the cut, and the rest of the token is
    dropped as it arrives (`swallowing`), so the JSON stays valid.
    """

    def __init__(self, rules: DirectionRules, ruleset: RuleSet, reporter: Reporter, where: str,
                 json: bool = False) -> None:
        self.rules = rules
        self.hold = rules.holds
        self.window = ruleset.stream_window
        self.max_hold = ruleset.max_hold_chars
        self.context = ruleset.context_chars
        self.reporter = reporter
        self.where = where
        self.buf = ""
        self.base = 0  # absolute offset of buf[0]
        self.total = 0  # characters received
        self.emitted = 0  # characters released to the client
        self.chunk_ends: List[int] = []  # absolute end of every held chunk
        self.reported_end: Dict[str, int] = {}  # per detector, so a match is counted once
        self.open: Optional[Tuple[Rule, str, str]] = None  # (rule, action, placeholder) of a match cut at the cap
        # Scan once per `batch` new characters, not once per chunk: streams often
        # send a few characters per chunk, and each scan reads the whole window.
        self.batch = max(16, self.window // 4)
        self.unscanned = 0
        self.scan_at = self.window + self.batch  # scan once this many characters (as read) are held ...
        self.scan_cap = max(self.max_hold, self.scan_at)  # ... or this many as sent
        # JSON arguments: None until the first non-blank character says whether they are JSON.
        self.json: Optional[bool] = None if json else False
        self.lex_state = LexState()  # the JSON lexer's state at `base`
        self.swallowing = False  # dropping the rest of a bare token whose placeholder has left
        self.piece_ends: List[int] = []  # absolute end of each chunk the last release returned
        self.secrets: List[Tuple[str, str]] = []  # (text, placeholder) of every redaction, for the annotations
        self.edits: List[Edit] = []  # every replacement made so far, for annotations that index the text

    # --- public ------------------------------------------------------------

    def feed(self, text: str) -> Optional[List[str]]:
        """None: the chunk passes unchanged. Otherwise the chunks to send now (possibly none)."""
        self.buf += text
        self.total += len(text)
        if self.json is None and text.strip():
            self.json = self.buf.lstrip()[:1] in ("{", "[")
        if not self.hold:
            self.emitted = self.total
            self.unscanned += len(text)
            if self.unscanned >= self.batch:
                self._report_warnings(final=False)
            return None
        self.chunk_ends.append(self.total)
        held = self.total - self.emitted
        if held < self.scan_at:
            return []  # too little could be released to be worth a scan
        if self.json and held <= self.scan_cap and self._read_len(self.emitted - self.base) < self.scan_at:
            return []  # the same, counted as read (JSON escapes); the cap counts the text as sent
        return self._release(final=False)

    def flush(self) -> List[str]:
        """The channel ended: release everything held (redacted), or raise Blocked."""
        if not self.hold:
            self._report_warnings(final=True)
            return []
        return self._release(final=True)

    # --- internals ---------------------------------------------------------

    def _report(self, f: Finding) -> None:
        if f.start >= self.reported_end.get(f.detector, -1):
            self.reported_end[f.detector] = f.end
            self.reporter.report(self.rules.direction, f, self.where)

    def _report_warnings(self, final: bool) -> None:
        self.unscanned = 0
        view = self._view()
        for f in self._find(view):
            if final or f.end < self.base + view.end:  # one touching the end may still grow
                self._report(f)
        if not final:
            self._trim(self._back(view, self.base + view.end, self.window + self.context))

    def _back(self, view: View, pos: int, n: int) -> int:
        """The absolute offset `n` characters, as the detectors read them, before absolute offset `pos` (at most
        the end of what they read): never inside an escape. Without escapes, `pos - n`."""
        if view.identity:
            return pos - n
        return self.base + view.raw(max(view.at(pos - self.base) - n, 0))

    def _read_len(self, start: int) -> int:
        """About how many characters `buf[start:]` (JSON) reads as: exact for whole `\\uXXXX` and two-character
        escapes. It only paces scans; each scan measures the held text exactly."""
        slashes = self.buf.count("\\", start)
        if not slashes:
            return len(self.buf) - start
        return len(self.buf) - start - slashes - 4 * self.buf.count("\\u", start)

    def _view(self) -> View:
        """The buffer as the detectors read it: JSON decoded (see `jsontext.decoded_view`)."""
        if self.json:
            return decoded_view(self.buf, self.lex_state, self.base)
        return View(self.buf, len(self.buf))

    def _find(self, view: View) -> List[Finding]:
        """Findings in the buffer, with absolute offsets into the channel's text as sent."""
        if self.json:
            return find_json(self.buf, self.rules, self.base, view=view)
        return find(view.text, self.rules, self.base)

    def _trim(self, keep_from: int) -> None:
        keep_from = min(keep_from, self.emitted - self.context)
        if keep_from > self.base:
            if self.json is not False:
                state = advance(self.lex_state, self.buf[:keep_from - self.base], self.base)
                if state.escape_start is not None and state.escape_start > self.base:
                    # Never start the buffer inside an escape: it is read decoded, so it must be whole.
                    keep_from = state.escape_start
                    state = advance(self.lex_state, self.buf[:keep_from - self.base], self.base)
                self.lex_state = state
            self.buf = self.buf[keep_from - self.base:]
            self.base = keep_from

    def _release(self, final: bool) -> List[str]:
        if self.swallowing:
            self._swallow(final)
        view = self._view()
        findings = [f for f in self._find(view) if f.end > self.emitted]
        blocks = [f for f in findings if f.action == BLOCK]
        if blocks:
            for f in blocks:
                self._report(f)
            raise Blocked(blocks, self.where)
        # The window starts `window` characters (as read: a `\\uXXXX` is one) before the end of what is read.
        plain = view.identity
        window_start = self.total - self.window if plain else self._back(view, self.base + view.end, self.window)
        spans: List[Tuple[int, int, str]] = []
        still_open = False
        cont_end: Optional[int] = None
        if self.open is not None:
            rule, action, placeholder = self.open
            assert rule.continuation is not None
            m = rule.continuation.match(view.text, view.at(self.emitted - self.base))
            cont_end = self.base + view.raw(m.end()) if m else self.emitted
            # Like any match, it is settled only once a full window follows it
            # (a half-received END line must not close it early).
            still_open = not final and cont_end > window_start
            if action == REDACT and cont_end > self.emitted:
                spans.append((self.emitted, cont_end, placeholder))

        cutoff, forced = self._cutoff(findings, final, still_open, self.base + view.end, window_start)
        if cont_end is not None and not still_open:
            self.open = None
            cutoff = max(cutoff, cont_end)  # release the rest of the cut match now, while its span is known
        if cutoff <= self.emitted:
            return []
        for f in findings:
            if f.start >= cutoff:
                continue
            self._report(f)
            if f.action == REDACT:
                spans.append((f.red_start, f.red_end, f.placeholder))
                if f.red_end > cutoff and f.rule.continuation is not None:
                    self.open = (f.rule, f.action, f.placeholder)
        if spans and not self.json:
            self.secrets.extend((self.buf[max(s - self.base, 0):e - self.base], p) for s, e, p in spans)
        if self.json and spans:
            raw = spans
            spans = json_spans(self.buf, spans, self.base, self.lex_state, final=final, sent=self.emitted)
            if forced:
                spans = self._cut_token_spans(cutoff, raw, spans)
        out = self._pieces(cutoff, spans, forced)
        self.emitted = cutoff
        self.chunk_ends = [e for e in self.chunk_ends if e > cutoff]
        self._trim(self.emitted - self.context if plain else self._back(view, self.emitted, self.context))
        return out

    def _swallow(self, final: bool) -> None:
        """Drop the rest of the bare token cut by a forced release (its placeholder already left)."""
        end = bare_end(self.buf, self.emitted, self.base)
        if end < self.total or final:
            self.swallowing = False  # the token ended (or the channel did)
        self.emitted = end
        self.chunk_ends = [e for e in self.chunk_ends if e > end]

    def _cut_token_spans(self, cutoff: int, raw: List[Tuple[int, int, str]],
                         spans: List[Tuple[int, int, str]]) -> List[Tuple[int, int, str]]:
        """A forced cut inside a bare token a redaction touches: the whole token becomes one quoted placeholder (the
        part before the cut leaves as it, the rest is swallowed), never a placeholder followed by digits."""
        token = cut_token(self.buf, cutoff, self.base, self.lex_state)
        if token is None or token[0] < self.emitted:
            return spans  # no token there, or its start has left as it was: left alone (still JSON)
        a, b = token
        touching = sorted((s, -e, p) for s, e, p in raw if s < b and e > a)
        if not touching:
            return spans
        self.swallowing = True
        return [sp for sp in spans if not (sp[0] < b and sp[1] > a)] + [(a, cutoff, '"' + touching[0][2] + '"')]

    def _cutoff(self, findings: Sequence[Finding], final: bool, still_open: bool, read_end: int,
                window_start: int) -> Tuple[int, bool]:
        """Where to release up to, and whether the hold cap forced it. `read_end`: the end of what the detectors
        read (the text, unless it ends inside an escape), where a match may still grow; `window_start`: where the
        held window starts (`total - window` without escapes)."""
        if final:
            return self.total, False
        cutoff = window_start
        while True:
            moved = True
            while moved:  # overlapping matches can push the cut back more than once
                moved = False
                for f in findings:
                    # Never split a match, nor release the start of one that may still grow.
                    if f.start < cutoff and (f.end > cutoff or f.end >= read_end):
                        cutoff, moved = f.start, True
            if still_open:
                cutoff = self.emitted
            if self.total - max(cutoff, self.emitted) > self.max_hold:
                # The cap counts the text as sent: with escapes the window may hold more than it; then the cut
                # keeps max(max_hold, window) of it, as it would without escapes.
                cut = max(window_start, self.total - max(self.max_hold, self.window))
                return self._outside_escape(self._past_whole_matches(findings, read_end, cut)), True
            boundaries = [e for e in self.chunk_ends if e <= cutoff]
            snapped = boundaries[-1] if boundaries else self.emitted
            if snapped >= cutoff:
                return max(snapped, self.emitted), False
            cutoff = snapped  # back to the chunk boundary, which may fall inside another match

    def _past_whole_matches(self, findings: Sequence[Finding], read_end: int, cut: int) -> int:
        """A forced cut (hold cap) at `cut` moved past every match it would split that is already whole (only one
        still growing, a PEM block or a long number, is cut): a whole match leaves with one placeholder."""
        moved = True
        while moved:
            moved = False
            for f in findings:
                if f.start < cut < f.end < read_end:
                    cut, moved = f.end, True
        return cut

    def _outside_escape(self, cut: int) -> int:
        """A forced cut moved back to the start of the JSON escape it falls in (so no escape is split)."""
        if self.json:
            state = advance(self.lex_state, self.buf[:cut - self.base], self.base)
            if state.escape_start is not None and state.escape_start > self.emitted:
                return state.escape_start
        return cut

    def _pieces(self, cutoff: int, spans: List[Tuple[int, int, str]], forced: bool) -> List[str]:
        bounds = [e for e in self.chunk_ends if self.emitted < e <= cutoff]
        if not bounds or bounds[-1] != cutoff:
            bounds.append(cutoff)  # a forced cut inside a chunk
        # Chunks joined by a redaction span leave as one rewritten chunk.
        groups: List[List[int]] = []
        start = self.emitted
        for b in bounds:
            joined = groups and any(s < start < e for s, e, _ in spans)
            if joined:
                groups[-1][1] = b
            else:
                groups.append([start, b])
            start = b
        out: List[str] = []
        self.piece_ends = []
        for gs, ge in groups:
            text = self.buf[gs - self.base:ge - self.base]
            touched = [(s, e, p) for s, e, p in spans if s < ge and e > gs]
            if touched:
                text = redact(text, touched, offset=gs, edits=self.edits)
            if text:
                out.append(text)
                self.piece_ends.append(ge)
        return out


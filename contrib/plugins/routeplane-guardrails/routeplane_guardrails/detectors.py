"""The built-in detectors: compiled patterns plus validators that keep false positives low."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

# A validator sees the whole scanned text and the match, so it can look at context.
Validator = Callable[[str, "re.Match[str]"], bool]

UPGOING = "upgoing"
DOWNGOING = "downgoing"
BOTH = (UPGOING, DOWNGOING)


@dataclass(frozen=True)
class Rule:
    """One pattern of a detector. Redaction replaces the `secret` group if the pattern has one, else the match."""

    detector: str
    placeholder: str
    pattern: "re.Pattern[str]"
    validate: Optional[Validator] = None
    # After a match had to be cut at the hold limit, what still belongs to it
    # (anchored at the cut): only PEM blocks need this, they outgrow any window.
    continuation: Optional["re.Pattern[str]"] = None
    # Cheap pre-checks on the folded text (lower-case, every digit turned into "0"):
    # the rule runs only if one of `triggers` occurs and `prefilter` finds something.
    # Most rules start with a look-behind, which keeps `re` from skipping ahead itself.
    triggers: Tuple[str, ...] = ()
    prefilter: Optional["re.Pattern[str]"] = None

    def may_match(self, text: str, folded: str) -> bool:
        """`folded` is `fold(text)`: computed once per scan, shared by every rule."""
        if self.triggers and not any(t in folded for t in self.triggers):
            return False
        return self.prefilter is None or self.prefilter.search(folded) is not None

    @property
    def secret_group(self) -> Optional[str]:
        return "secret" if "secret" in self.pattern.groupindex else None


@dataclass(frozen=True)
class Detector:
    name: str
    rules: Tuple[Rule, ...]
    directions: Tuple[str, ...] = BOTH


# Token edges: keys are never matched inside a longer token (`xsk-…`, `…AKIA…`).
_L = r"(?<![A-Za-z0-9_\-])"
_R = r"(?![A-Za-z0-9_\-])"


def _looks_random(text: str, m: "re.Match[str]") -> bool:
    """Real keys are random base62: upper, lower and digits. Hyphenated slugs (`sk-learn-…`) are not."""
    body = m.group("body")
    return any(c.isupper() for c in body) and any(c.islower() for c in body) and any(c.isdigit() for c in body)


def _has_digit_and_letter(text: str, m: "re.Match[str]") -> bool:
    body = m.group("body")
    return any(c.isdigit() for c in body) and any(c.isalpha() for c in body)


_PLACEHOLDER_VALUES = frozenset({"null", "none", "true", "false", "required", "optional", "string", "redacted"})


def _real_password(text: str, m: "re.Match[str]") -> bool:
    """Skip templates and placeholders (`${DB_PASSWORD}`, `<password>`, `****`, `null`)."""
    value = m.group("secret")
    if value[0] in "$<{%[(" or set(value) <= set("*xX.•"):
        return False
    # `{"password": null}`: an unquoted value runs into the closing bracket.
    return value.rstrip("})]").lower() not in _PLACEHOLDER_VALUES


def _basic_auth(text: str, m: "re.Match[str]") -> bool:
    """`Basic <base64>` counts only if it decodes to `user:password` (so "basic understanding" never matches)."""
    raw = m.group("secret")
    try:
        decoded = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded and all(32 <= b < 127 for b in decoded)


def _not_loopback(text: str, m: "re.Match[str]") -> bool:
    # The left edge is checked here, not by a look-behind, so the pattern starts with a digit.
    if m.start() > 0 and (text[m.start() - 1].isalnum() or text[m.start() - 1] in "._"):
        return False
    addr = ipaddress.IPv4Address(m.group(0))
    if addr.is_loopback or addr.is_unspecified:
        return False
    # "version 1.2.3.4" / "v1.2.3.4" is a version, not an address.
    before = text[max(0, m.start() - 10):m.start()].lower()
    return not re.search(r"(?:version|ver\.?|release)\s*$", before)


def _not_url_userinfo(text: str, m: "re.Match[str]") -> bool:
    """`postgres://app:pw@db.example.com` holds a credential, not an email address."""
    return not re.search(r"://[^\s/@]*$", text[max(0, m.start() - 200):m.start()])


def _digit_count(lo: int, hi: int) -> Validator:
    def check(text: str, m: "re.Match[str]") -> bool:
        return lo <= sum(c.isdigit() for c in m.group(0)) <= hi

    return check


def _recursive_rm(text: str, m: "re.Match[str]") -> bool:
    flags = m.group("flags")
    short = "".join(f[1:] for f in flags.split() if f.startswith("-") and not f.startswith("--"))
    return ("r" in short or "R" in short or "--recursive" in flags) and ("f" in short or "--force" in flags)


_FOLD_DIGITS = str.maketrans("123456789", "000000000")


def fold(text: str) -> str:
    """Lower-case with every ASCII digit as "0": one C-speed pass that lets digit shapes be triggers."""
    return text.lower().translate(_FOLD_DIGITS)


def _r(detector: str, placeholder: str, regex: str, validate: Optional[Validator] = None,
       flags: int = 0, continuation: Optional[str] = None, triggers: Tuple[str, ...] = (),
       prefilter: Optional[str] = None) -> Rule:
    return Rule(detector, placeholder, re.compile(regex, flags), validate,
                re.compile(continuation, flags) if continuation else None,
                tuple(t.lower() for t in triggers), re.compile(prefilter) if prefilter else None)


# PEM body: base64, whitespace, literal `\n` escapes (keys inside JSON strings),
# and the `Proc-Type:`/`DEK-Info:` header lines of encrypted keys. A hyphen is
# body only if it does not start the `-----END` line.
_PEM_BODY = r"(?:[A-Za-z0-9+/=:,.\s\\]|-(?!----))*"
_PEM_END = r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)?"

_API_KEYS = "api_keys"
_PRIVATE_KEYS = "private_keys"
_CREDENTIALS = "credentials"
_EMAILS = "pii_emails"
_PHONES = "pii_phone_numbers"
_IPS = "ip_addresses"
_COMMANDS = "suspicious_commands"

_SHELL_END = r"(?=$|[\s;&|'\"`)])"
_PASSWORD_TRIGGERS = ("pass", "pwd")
# The key may be quoted, and its quote JSON-escaped (`{\"password\": \"…\"}` in a JSON string).
_PASSWORD_KEY = r"(?i)(?<![A-Za-z0-9])(?:password|passwd|passphrase|pwd)(?:\\?[\"'])?\s*[:=]\s*"

BUILTIN_DETECTORS: Dict[str, Detector] = {
    _API_KEYS: Detector(_API_KEYS, (
        # OpenAI (sk-, sk-proj-, sk-svcacct-, sk-admin-) and Anthropic (sk-ant-api03-…).
        _r(_API_KEYS, "api_key", _L + r"sk-(?:ant-[a-z]+\d*-|proj-|svcacct-|admin-)?(?P<body>[A-Za-z0-9_\-]{20,})" + _R,
           _looks_random, triggers=("sk-",)),
        # AWS access key ids (long-term AKIA, temporary ASIA).
        _r(_API_KEYS, "api_key", _L + r"(?:AKIA|ASIA)[A-Z0-9]{16}" + _R, triggers=("akia", "asia")),
        # AWS secret access key: 40 base64 chars are too common alone, so only when labelled.
        _r(_API_KEYS, "api_key",
           r"(?i)aws_?secret(?:_?access)?_?key[\"']?\s*[:=]\s*[\"']?(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
           triggers=("secret",)),
        # Google API keys.
        _r(_API_KEYS, "api_key", _L + r"AIza[0-9A-Za-z_\-]{35}" + _R, triggers=("aiza",)),
        # GCP service-account JSON: the private key string (closing quote optional so a
        # stream holds it while it is still arriving) and its id.
        _r(_API_KEYS, "api_key", r"\"private_key\"\s*:\s*\"(?P<secret>(?:[^\"\\]|\\.)+)\"?",
           continuation=r"(?:[^\"\\]|\\.)*\"?", triggers=('"private_key"',)),
        _r(_API_KEYS, "api_key", r"\"private_key_id\"\s*:\s*\"(?P<secret>[0-9a-f]{40})\"",
           triggers=('"private_key_id"',)),
        # GitHub classic tokens and fine-grained PATs.
        _r(_API_KEYS, "api_key", _L + r"gh[pousr]_[A-Za-z0-9]{36}" + _R,
           triggers=("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
        _r(_API_KEYS, "api_key", _L + r"github_pat_[A-Za-z0-9_]{22,}" + _R, triggers=("github_pat_",)),
        # Stripe secret and restricted keys.
        _r(_API_KEYS, "api_key", _L + r"(?:sk|rk)_(?:live|test)_(?P<body>[A-Za-z0-9]{16,})" + _R, _has_digit_and_letter,
           triggers=("_live_", "_test_")),
    )),
    _PRIVATE_KEYS: Detector(_PRIVATE_KEYS, (
        # The whole block, BEGIN to END (RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP, bare PKCS#8, …).
        _r(_PRIVATE_KEYS, "private_key", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----" + _PEM_BODY + _PEM_END,
           continuation=_PEM_BODY + _PEM_END, triggers=("-----begin ",)),
    )),
    _CREDENTIALS: Detector(_CREDENTIALS, (
        # password=… / "password": "…" / pwd: '…' — quoted values may hold spaces.
        _r(_CREDENTIALS, "credential", _PASSWORD_KEY + r"\"(?P<secret>[^\"\n]{3,200})\"", _real_password,
           triggers=_PASSWORD_TRIGGERS),
        _r(_CREDENTIALS, "credential", _PASSWORD_KEY + r"'(?P<secret>[^'\n]{3,200})'", _real_password,
           triggers=_PASSWORD_TRIGGERS),
        # The same inside a JSON string (tool-call arguments): `PASSWORD=\"…\"`, `\"password\": \"…\"`.
        _r(_CREDENTIALS, "credential", _PASSWORD_KEY + r"\\\"(?P<secret>[^\"\\\n]{3,200})\\\"", _real_password,
           triggers=_PASSWORD_TRIGGERS),
        _r(_CREDENTIALS, "credential", _PASSWORD_KEY + r"(?P<secret>[^\s\"'`,;&<>]{3,})", _real_password,
           triggers=_PASSWORD_TRIGGERS),
        _r(_CREDENTIALS, "credential", r"(?i)\bbasic\s+(?P<secret>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])",
           _basic_auth,
           triggers=("basic",)),
        # Any URL with user:password@ — postgres://, postgresql+psycopg2://, mongodb+srv://, redis://, https://, …
        _r(_CREDENTIALS, "credential",
           r"(?i)\b[a-z][a-z0-9+.\-]{1,30}://[^\s:/@'\"]+:(?P<secret>[^\s@/'\"]+)@[A-Za-z0-9.\-\[]", triggers=("://",)),
    )),
    _EMAILS: Detector(_EMAILS, (
        _r(_EMAILS, "email",
           r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]{1,64}@(?:[A-Za-z0-9\-]{1,63}\.)+[A-Za-z]{2,24}(?![A-Za-z0-9\-])",
           _not_url_userinfo, triggers=("@",)),
    )),
    _PHONES: Detector(_PHONES, (
        # E.164, compact or grouped: +4930123456, +1 212 555 0123, +44 (20) 7946-0958. A separator is
        # required between groups so a long digit run cannot be split many ways (no backtracking blow-up).
        _r(_PHONES, "phone_number",
           r"(?<![\w+])\+[1-9](?:\d{7,14}|\d{0,3}(?:[ .\-](?:\(\d{1,5}\)|\d{1,5})){1,6})(?![\d\-])",
           _digit_count(8, 15), triggers=("+",)),
        # NANP: (212) 555-0123, 212-555-0123, 212.555.0123, 1-800-555-0199 — separators required, so
        # a bare 10-digit id or "200 300 4000" never matches.
        _r(_PHONES, "phone_number",
           r"(?<![\w.+\-])(?:1[\-.\s]?)?(?:\([2-9]\d{2}\)\s?[2-9]\d{2}[\-.\s]\d{4}|[2-9]\d{2}([\-.])[2-9]\d{2}\1\d{4})"
           r"(?![\w\-]|\.\d)", triggers=("000-", "000.", "000)")),
        # European national formats: French pairs (01 23 45 67 89), UK 020 7946 0958 / 07700 900123.
        _r(_PHONES, "phone_number", r"(?<![\w.+\-])0[1-9](?:[ .]\d{2}){4}(?![\w\-]|\.\d)",
           triggers=("00 00 ", "00.00.")),
        _r(_PHONES, "phone_number", r"(?<![\w.+\-])0\d{2,4} \d{3,4} ?\d{3,4}(?![\w\-]|\.\d)", _digit_count(10, 11),
           triggers=("000 00",)),
    )),
    _IPS: Detector(_IPS, (
        _r(_IPS, "ip_address",
           r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)",
           _not_loopback, prefilter=r"0\.0{1,3}\.0{1,3}\.0"),
    )),
    _COMMANDS: Detector(_COMMANDS, (
        # rm -rf / (and -fr, -r -f, --no-preserve-root, /*, ~, $HOME) — not rm -rf /tmp/x.
        _r(_COMMANDS, "command",
           r"\brm\s+(?P<flags>(?:-{1,2}[A-Za-z\-]+\s+)+)(?:/\*?|~/?|\$HOME/?)" + _SHELL_END, _recursive_rm,
           triggers=("rm",)),
        # Download piped into a shell. Arguments are matched token by token (bounded) so a long
        # line of "curl"/"dd" words stays linear.
        _r(_COMMANDS, "command",
           r"\b(?:curl|wget)\s+(?:[^\s|]+[ \t]+){0,12}[^\s|]*[ \t]*\|\s*(?:sudo\s+(?:-\S+\s+)*)?(?:ba|z|da|k)?sh\b",
           triggers=("|",)),
        # The classic bash fork bomb.
        _r(_COMMANDS, "command", r":\(\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:", triggers=(":()",)),
        _r(_COMMANDS, "command", r"\bmkfs(?:\.\w+)?\s+(?:-\S+\s+)*/dev/\w+", triggers=("mkfs",)),
        _r(_COMMANDS, "command",
           r"\bdd[ \t]+(?:\S+[ \t]+){0,8}of=/dev/(?:sd[a-z]|nvme\d|hd[a-z]|xvd[a-z]|vd[a-z]|mmcblk\d|disk\d)",
           triggers=("of=/dev/",)),
        _r(_COMMANDS, "command", r"\bchmod\s+(?:-\w+\s+)*(?:-R\s+(?:-\w+\s+)*0?777|0?777\s+-R)\s+/\*?" + _SHELL_END,
           triggers=("000",)),
    ), directions=(DOWNGOING,)),
}

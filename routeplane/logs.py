"""Logging set-up: one format for the gateway's own loggers, and credentials kept out of every line."""

from __future__ import annotations

import logging
import re

# A query parameter that carries a credential: Gemini clients send `?key=<api key>`. gunicorn writes the
# request line, query and all, when it refuses one before the app runs ("Invalid request from ip=…") or
# when a request fails outside the app; the value ends at the next parameter, quote, backslash (a repr'd
# control character) or space.
_QUERY_SECRET = re.compile(r"([?&;](?:key|api[_-]?key|access[_-]?token|token)=)[^&;#\s'\"\\]+", re.IGNORECASE)
# Wherever else a client put one: an API key's secret part (its id is public) and a compact JWT.
_API_KEY_SECRET = re.compile(r"(rpk_[0-9a-f]{16}_)[A-Za-z0-9_-]{43}")
# An upstream provider's key, whole: OpenAI's and Anthropic's `sk-…` (sk-proj-, sk-ant-api03-, …) and Google's
# `AIza…`. A client that swapped its settings sends the one it uses upstream as the model name.
_UPSTREAM_KEY = re.compile(r"(?<![A-Za-z0-9_-])(?:sk-[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{35})")
# Only where a run of base64url characters begins: tried at every `eyJ` inside a run ("eyJeyJeyJ…", up to a
# refused request line's 8 KB), each try scanned the rest of the run, quadratic (5 ms at 4 KB, 3.5 s at 100 KB).
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with credential query parameters, API-key secrets, upstream keys and JWTs replaced by `[redacted]`."""
    text = _QUERY_SECRET.sub(r"\1" + REDACTED, text)
    text = _UPSTREAM_KEY.sub(REDACTED, _API_KEY_SECRET.sub(r"\1" + REDACTED, text))
    return _JWT.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrites a record whose message names a credential query parameter; every record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format: logging reports it itself, later
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_logger(logger: logging.Logger) -> None:
    """Install the RedactingFilter on `logger` once (gunicorn's error and access logs, in each worker)."""
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())


def configure_logging(level: str = "info") -> None:
    logger = logging.getLogger("routeplane")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        handler.addFilter(RedactingFilter())  # on the handler: it sees the records of every child logger too
        logger.addHandler(handler)
        logger.propagate = False

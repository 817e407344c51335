"""An upstream body that cannot be decoded is named as such, not as a broken connection."""

from __future__ import annotations

import requests
import urllib3

from routeplane.errors import InvalidUpstreamResponse
from routeplane.language_model.routing import RoutingTarget
from routeplane.language_model.transport import translate_exception

TARGET = RoutingTarget(provider="up", model="m", protocol="openai_chat", base_url="http://127.0.0.1:9/v1")


def test_a_body_that_does_not_decode_says_so() -> None:
    for exc in (requests.exceptions.ContentDecodingError("incorrect header check"),
                urllib3.exceptions.DecodeError("Received response with content-encoding: gzip, but failed")):
        err = translate_exception(exc, TARGET)
        assert isinstance(err, InvalidUpstreamResponse) and err.retriable
        assert "could not be decoded" in str(err) and "connection broke" not in str(err)


def test_a_broken_connection_still_says_so() -> None:
    for exc in (requests.exceptions.ChunkedEncodingError("Connection broken"),
                urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead")):
        err = translate_exception(exc, TARGET)
        assert isinstance(err, InvalidUpstreamResponse) and "connection broke" in str(err)

"""The official openai SDK on a gateway served in process (httpx2's WSGI transport), over a real FakeUpstream."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Tuple

import httpx2
import openai

from routeplane.language_model.executor import HttpExecutor
from routeplane.testing import Gateway
from tests.support.upstream import FakeUpstream

OpenAIEnv = Tuple[FakeUpstream, openai.OpenAI]


def openai_client(gateway: Gateway) -> openai.OpenAI:
    """A client that calls `gateway` in process; no retries, so a test sees the first answer."""
    return openai.OpenAI(base_url="http://gateway/v1", api_key="client-key", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.WSGITransport(app=gateway.flask)))


@contextmanager
def openai_env(config: Callable[[str], Dict[str, Any]]) -> Iterator[OpenAIEnv]:
    """A started FakeUpstream, and a client on a gateway configured by `config(upstream_url)`."""
    up = FakeUpstream().start()
    try:
        client = openai_client(Gateway(config=config(up.url), executor=HttpExecutor()))
        try:
            yield up, client
        finally:
            client.close()
    finally:
        up.stop()

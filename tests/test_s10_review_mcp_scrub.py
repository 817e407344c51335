"""Review of session 10: a tool-error result is scrubbed of the gateway-held credentials in every block."""

from __future__ import annotations

import json

from routeplane.mcp.settings import MCPServerConfig
from routeplane.mcp.upstream_http import HttpUpstream

TOKEN = "vault-upstream-credential-5e6f7a8b"  # not key-shaped: only the configured value can find it


def _upstream() -> HttpUpstream:
    return HttpUpstream(MCPServerConfig(id="v", type="http", prefix="v__", url="http://127.0.0.1:9/mcp",
                                        headers={"Authorization": f"Bearer {TOKEN}"}), lambda *a: None)


def test_an_embedded_resource_or_resource_link_of_a_tool_error_is_scrubbed() -> None:
    """Only `text` blocks were scrubbed: a tool failing with an embedded resource (`resource.text`, a `uri`
    with `?token=`) or a `resource_link` quoting the credential handed it to every caller."""
    result = {"isError": True, "content": [
        {"type": "resource", "resource": {"uri": f"file:///log?token={TOKEN}", "mimeType": "text/plain",
                                          "text": f"401 for {TOKEN}"}},
        {"type": "resource_link", "uri": f"https://vault.example/?t={TOKEN}", "name": "log",
         "description": f"rejected {TOKEN}"},
    ]}
    out = _upstream().redact_tool_error(result)
    assert TOKEN not in json.dumps(out), out
    assert out["content"][0]["resource"]["text"] == "401 for [redacted]"
    assert out["content"][1]["uri"] == "https://vault.example/?t=[redacted]"
    assert TOKEN in json.dumps(result)  # the upstream's own object is not changed in place


def test_binary_payloads_of_a_tool_error_are_left_as_they_are() -> None:
    """Base64 (`data`, `blob`) is no text a credential is quoted in; scrubbing it could only corrupt it."""
    blob = "c2stcHJvai1hYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NQ=="
    result = {"isError": True, "content": [
        {"type": "image", "data": blob, "mimeType": "image/png"},
        {"type": "resource", "resource": {"uri": "file:///x.bin", "blob": blob}},
    ]}
    out = _upstream().redact_tool_error(result)
    assert out["content"][0]["data"] == blob and out["content"][1]["resource"]["blob"] == blob

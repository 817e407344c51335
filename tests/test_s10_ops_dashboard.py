"""The dashboard's ACP agents table says what each agent is (its command, default, where its LLM calls go),
never its arguments or environment values."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from typing import Any, List, Optional

from routeplane.app import build_app
from routeplane.config import DEFAULT_CONFIG, parse_config


class _Table(HTMLParser):
    """The cells of `<table id=config-agents>`, row by row, as text."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.rows: List[List[str]] = []
        self.cell: Optional[List[str]] = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "table" and dict(attrs).get("id") == "config-agents":
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(re.sub(r"\s+", " ", "".join(self.cell)).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def test_agents_table_shows_what_each_agent_is(tmp_path: Any) -> None:
    c = copy.deepcopy(DEFAULT_CONFIG)
    c["database"] = {"url": f"sqlite:///{tmp_path}/rp.db"}
    c["agents"] = {
        "claude": {"command": "claude-code-acp", "args": ["--api-key", "sk-agent-arg-secret"], "default": True,
                   "env": {"AGENT_TOKEN": "tok-agent-env-secret"}, "description": "Anthropic's coding agent",
                   "gateway": {"token_env": "CLAUDE_AGENT_KEY"}},
        "codex": {"command": "/usr/local/bin/codex-acp", "gateway": {"enabled": False}},
    }
    app = build_app(parse_config(c))
    try:
        page = app.flask_app().test_client().get("/admin/config").get_data(as_text=True)
    finally:
        app.shutdown()
        app.store.close()
    table = _Table()
    table.feed(page)
    header, *rows = table.rows
    assert header == ["Agent", "Command", "Default", "LLM calls", "Environment names", "Description"]
    assert rows == [
        ["claude", "claude-code-acp", "yes", "this gateway, key from $CLAUDE_AGENT_KEY", "AGENT_TOKEN",
         "Anthropic's coding agent"],
        ["codex", "/usr/local/bin/codex-acp", "no", "its own providers", "–", "–"],
    ]
    assert "sk-agent-arg-secret" not in page and "tok-agent-env-secret" not in page

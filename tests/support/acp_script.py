"""Scripted line agents for the ACP relay tests: a few lines of Python that answer each JSON-RPC line read.

They need no ACP package, so they start in a few milliseconds; a test writes the source to a file and
names it as the agent's command argument.
"""

from __future__ import annotations

import textwrap

_SEND = '''
def send(message):
    sys.stdout.write(json.dumps(message) + "\\n")
    sys.stdout.flush()

for line in sys.stdin:
    m = json.loads(line)
    method, rid = m.get("method"), m.get("id")
'''


def line_agent(on_message: str, setup: str = "") -> str:
    """The source of an agent that runs `on_message` for each line it reads, with `m` the message,
    `method` and `rid` its method and id, and `send(message)` to write one line back. `setup` runs
    first (more imports, argv); json, os and sys are imported."""
    return ("import json, os, sys\n" + textwrap.dedent(setup).strip("\n") + "\n" + _SEND
            + textwrap.indent(textwrap.dedent(on_message).strip("\n"), "    ") + "\n")

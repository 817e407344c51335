"""docs/deploy.md's single-host walk, run as written (paths moved under a temporary directory, and without
`runuser`, which needs the service user): its config, its secrets file, then every `routeplane` command
it shows with that file sourced. The secrets file set a PostgreSQL URL on db.internal, so on one host
every command that opens the store failed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "docs", "deploy.md")
ROUTEPLANE = os.path.join(os.path.dirname(sys.executable), "routeplane")


def _text() -> str:
    with open(DEPLOY, encoding="utf-8") as fh:
        return fh.read()


def _moved(text: str, tmp: Any) -> str:
    text = text.replace("/srv/routeplane/venv/bin/routeplane", ROUTEPLANE)
    text = text.replace("/etc/routeplane", f"{tmp}/etc").replace("/srv/routeplane", f"{tmp}/srv")
    return text.replace("runuser -u routeplane -- ", "")


def _commands(text: str) -> List[str]:
    """The `sh -c '…routeplane …'` lines of the shell blocks, in order."""
    blocks = re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M)
    return [line for block in blocks for line in block.splitlines()
            if line.startswith("sh -c ") and "/venv/bin/routeplane " in line]


def test_the_single_host_walk_runs_as_written(tmp_path: Any) -> None:
    text = _text()
    (tmp_path / "etc").mkdir()
    (tmp_path / "srv").mkdir()
    config = re.findall(r"^```yaml\n(.*?)^```", text, re.S | re.M)[0]
    (tmp_path / "etc" / "routeplane.yaml").write_text(_moved(config, tmp_path))
    secrets = re.search(r"cat >> /etc/routeplane/secrets.env <<'EOF'\n(.*?)^EOF$", text, re.S | re.M)
    assert secrets, "deploy.md writes the secrets file with a heredoc"
    (tmp_path / "etc" / "secrets.env").write_text(secrets.group(1))
    commands = _commands(text)
    subcommands = [re.search(r"/venv/bin/routeplane (\w+)", c).group(1) for c in commands]  # type: ignore[union-attr]
    assert {"check", "migrate", "keys"} <= set(subcommands), subcommands
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEPLANE_") and not k.endswith("_API_KEY")}
    for command in commands:
        shell = _moved(command, tmp_path)[len("sh -c "):]
        r = subprocess.run(["sh", "-c", shell.strip("'")], env=env, cwd=str(tmp_path), capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, f"{command}\n{r.stderr}"
        assert "Traceback" not in r.stderr
    assert (tmp_path / "srv" / "routeplane.db").exists()  # the one-host store, where the service keeps it

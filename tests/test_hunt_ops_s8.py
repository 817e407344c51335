"""A new user's walkthrough of the operator docs: `spend` windows, commands that need no provider secrets,
`keys` without the auth tables, the audience warning's form, retrieving a `provider:model`, and the
auth-less admin rule on a Unix socket (direct, and behind the shipped nginx)."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from typing import Any, Dict, Iterator, Tuple

import pytest
import requests

from routeplane.cli import main
from tests.support.gateway import GatewayProcess
from tests.support.nginx import NginxProcess, nginx_binary

BASE = ("providers:\n  mock: {protocol: mock}\n"
        "models:\n  default: {targets: [{provider: mock, model: echo}]}\n")
# A config as deployed: its provider key comes from the service's environment, which a shell lacks.
WITH_SECRET = ("providers:\n  openai: {protocol: openai_chat, base_url: 'https://api.openai.com/v1', "
               "api_key: '${RP_S8_OPENAI_KEY}'}\n"
               "models:\n  default: {targets: [{provider: openai, model: gpt-4o}]}\n"
               "database: {url: 'sqlite:///${RP_S8_DB_PATH}'}\n")


@pytest.fixture(autouse=True)
def _no_routeplane_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for key in [k for k in os.environ if k.startswith(("ROUTEPLANE_", "RP_S8_"))]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def _migrated(tmp_path: Any) -> str:
    url = f"sqlite:///{tmp_path}/rp.db"
    assert main(["migrate", "--quiet", "--database", url]) == 0
    return url


def _one_error(capsys: pytest.CaptureFixture, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("routeplane: ") and len(err.splitlines()) == 1, (code, err)
    return err


# --- spend ------------------------------------------------------------------------------------------------


def test_spend_until_now_is_the_default_it_names(tmp_path: Any, capsys: pytest.CaptureFixture) -> None:
    url = _migrated(tmp_path)
    capsys.readouterr()
    assert main(["spend", "--database", url, "--since", "1h", "--until", "now", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["until"] - report["since"] == pytest.approx(3600, abs=1)


@pytest.mark.parametrize("since, until", [("30m", "1h"), ("now", None), ("now", "now"),
                                          ("2026-01-02T00:00", "2026-01-01T00:00")])
def test_spend_window_that_ends_before_it_starts_is_refused(tmp_path: Any, capsys: pytest.CaptureFixture,
                                                            since: str, until: Any) -> None:
    url = _migrated(tmp_path)
    capsys.readouterr()
    argv = ["spend", "--database", url, "--since", since] + (["--until", until] if until else [])
    code = main(argv)
    err = _one_error(capsys, code)
    assert code == 2 and f"--since {since!r}" in err and f"--until {(until or 'now')!r}" in err, err
    assert "empty" in err


def _secret_config(tmp_path: Any) -> None:
    (tmp_path / "routeplane.yaml").write_text(WITH_SECRET)


def test_spend_and_migrate_with_database_need_none_of_the_configs_secrets(
        tmp_path: Any, capsys: pytest.CaptureFixture) -> None:
    _secret_config(tmp_path)  # ./routeplane.yaml, as the docs' examples leave it
    url = f"sqlite:///{tmp_path}/rp.db"
    assert main(["migrate", "--quiet", "--database", url]) == 0, capsys.readouterr().err
    assert main(["migrate", "--status", "--database", url]) == 0, capsys.readouterr().err
    assert "spend_log" in capsys.readouterr().out
    assert main(["spend", "--database", url, "--json"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["total"]["requests"] == 0


def test_without_database_the_configs_unset_variables_are_still_named(
        tmp_path: Any, capsys: pytest.CaptureFixture) -> None:
    _secret_config(tmp_path)  # the store's URL itself comes from the config: every unset variable counts
    assert main(["spend"]) == 1
    err = capsys.readouterr().err
    assert "RP_S8_OPENAI_KEY" in err and "RP_S8_DB_PATH" in err


# --- keys -------------------------------------------------------------------------------------------------


def _config(tmp_path: Any, auth: str) -> str:
    path = tmp_path / f"{auth}.yaml"
    path.write_text(BASE + f"database: {{url: 'sqlite:///{tmp_path}/{auth}.db'}}\nauth: {{mode: {auth}}}\n")
    return str(path)


@pytest.mark.parametrize("argv", [["create"], ["list"], ["revoke", "0123456789abcdef"]])
def test_keys_with_auth_mode_none_say_what_to_do(tmp_path: Any, capsys: pytest.CaptureFixture, argv: Any) -> None:
    path = _config(tmp_path, "none")
    assert main(["migrate", "--quiet", "--config", path]) == 0  # migrated: no auth tables under mode none
    capsys.readouterr()
    code = main(["keys", *argv, "--config", path])
    err = _one_error(capsys, code)
    assert "no such table" not in err and "auth.mode is none" in err and "api_keys" in err, err
    assert "routeplane migrate" in err


@pytest.mark.parametrize("seconds", ["0", "-60"])
def test_keys_create_refuses_an_expiry_that_is_not_in_the_future(
        tmp_path: Any, capsys: pytest.CaptureFixture, seconds: str) -> None:
    path = _config(tmp_path, "api_keys")
    assert main(["migrate", "--quiet", "--config", path]) == 0
    capsys.readouterr()
    code = main(["keys", "create", "--config", path, f"--expires-in={seconds}"])
    out, err = capsys.readouterr()
    assert code == 2 and not out and "--expires-in" in err and err.startswith("routeplane: "), (code, out, err)
    assert main(["keys", "list", "--config", path, "--json"]) == 0
    assert capsys.readouterr().out == "", "a refused key was stored anyway"


def test_token_mint_refuses_a_negative_expiry(tmp_path: Any, capsys: pytest.CaptureFixture) -> None:
    """`--exp 0` is documented as "never"; a negative one made a token that never expires too."""
    assert main(["token", "mint", "--key", str(tmp_path / "k.json"), "--exp=-60"]) == 2
    out, err = capsys.readouterr()
    assert not out and "--exp" in err


# --- check's audience warning --------------------------------------------------------------------------


def test_check_prints_the_audience_warning_as_a_routeplane_warning(tmp_path: Any) -> None:
    path = tmp_path / "jwt.yaml"
    path.write_text(BASE + "auth: {mode: jwt}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEPLANE_")}
    p = subprocess.run([sys.executable, "-m", "routeplane.cli", "check", str(path)], capture_output=True, text=True,
                       timeout=60, env=env, cwd=tmp_path)
    assert p.returncode == 0 and "OK" in p.stdout, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("routeplane: warning: auth.audience is not set"), p.stderr


# --- a gateway on TCP and a Unix socket, with auth off ---------------------------------------------------


@pytest.fixture(scope="module")
def sock_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="rp-s8-")
    os.chmod(d, 0o755)  # nginx's workers may run as another user
    yield d


@pytest.fixture(scope="module")
def gateway(sock_dir: str) -> Iterator[GatewayProcess]:
    config = {"providers": {"mock": {"protocol": "mock"}},
              "models": {"default": {"targets": [{"provider": "mock", "model": "echo"}]}},
              "database": {"url": ""}, "server": {"log_level": "warning"}}
    gw = GatewayProcess(config)
    # gunicorn's own GUNICORN_CMD_ARGS adds the Unix socket next to the TCP port the fixture checks health on.
    gw.extra_env["GUNICORN_CMD_ARGS"] = f"--bind 127.0.0.1:{gw.port} --bind unix:{sock_dir}/rp.sock"
    gw.start()
    yield gw
    gw.stop()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def _unix_get(sock_dir: str, path: str, headers: Dict[str, str] = {}) -> Tuple[int, Any]:  # noqa: B006
    conn = _UnixConnection(f"{sock_dir}/rp.sock")
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_admin_answers_a_local_process_on_the_unix_socket(gateway: GatewayProcess, sock_dir: str) -> None:
    status, body = _unix_get(sock_dir, "/admin/whoami")  # as `curl --unix-socket`
    assert status == 200 and body["scope"] == "admin" and body["account_id"] == "local", body


def test_admin_on_the_unix_socket_refuses_a_proxied_request(gateway: GatewayProcess, sock_dir: str) -> None:
    status, body = _unix_get(sock_dir, "/admin/whoami", {"X-Real-IP": "203.0.113.9"})
    assert status == 403 and "X-Real-IP" in body["error"]["message"], body


def test_admin_refusal_names_the_proxy_header(gateway: GatewayProcess) -> None:
    r = requests.get(gateway.url + "/admin/whoami", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=30)
    assert r.status_code == 403
    message = r.json()["error"]["message"]
    assert "through a proxy" in message and "X-Forwarded-For" in message and "another host" not in message


def test_admin_behind_the_shipped_nginx_over_a_unix_socket_is_refused(gateway: GatewayProcess, sock_dir: str) -> None:
    """Every remote client reaches the gateway over the socket then: nginx's X-Forwarded-For tells them apart."""
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (scripts/test-services)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "deploy", "nginx.conf")) as fh:
        text = fh.read()
    text, n1 = re.subn(r"server 127\.0\.0\.1:4356\b", f"server unix:{sock_dir}/rp.sock", text)
    text, n2 = re.subn(r"listen 80;", "listen 127.0.0.1:{port};", text)
    text, n3 = re.subn(r"access_log /var/log/nginx/routeplane\.access\.log ", "access_log {dir}/access.log ", text)
    assert n1 == n2 == n3 == 1
    with NginxProcess(text) as nginx:
        r = requests.get(nginx.url + "/admin/whoami", timeout=30)
        assert r.status_code == 403 and "X-Forwarded-For" in r.json()["error"]["message"], r.text
        assert requests.get(nginx.url + "/health", timeout=30).status_code == 200  # the socket path works


# --- retrieving a model that chat accepts ----------------------------------------------------------------


def test_openai_retrieves_a_direct_provider_model(gateway: GatewayProcess, oai: Any) -> None:
    assert oai.chat.completions.create(model="mock:echo", messages=[{"role": "user", "content": "hi"}]).choices
    model = oai.models.retrieve("mock:echo")
    assert (model.id, model.object, model.owned_by) == ("mock:echo", "model", "mock")
    assert oai.models.retrieve("default").owned_by == "routeplane"


def test_anthropic_retrieves_a_direct_provider_model(gateway: GatewayProcess, claude: Any) -> None:
    model = claude.models.retrieve("mock:echo")
    assert (model.type, model.id, model.display_name) == ("model", "mock:echo", "mock:echo")


def test_genai_gets_a_direct_provider_model(gateway: GatewayProcess, gclient: Any) -> None:
    model = gclient.models.get(model="mock:echo")
    assert model.name == "models/mock:echo" and "generateContent" in model.supported_actions


@pytest.mark.parametrize("headers", [{}, {"anthropic-version": "2023-06-01"}, {"x-goog-api-key": "k"}])
def test_v1_models_retrieval_of_an_unknown_model_is_still_a_404(gateway: GatewayProcess, headers: Any) -> None:
    for model in ("nope:echo", "no-such-route"):
        r = requests.get(f"{gateway.url}/v1/models/{model}", headers=headers, timeout=30)
        assert r.status_code == 404, (model, r.text)
    r = requests.get(f"{gateway.url}/v1beta/models/nope:echo", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"


# --- docs/plugins.md: the kit's fixtures -------------------------------------------------------------


def test_routeplane_gateway_uses_the_routeplane_upstream_fixture(routeplane_gateway: Any,
                                                                 routeplane_upstream: Any) -> None:
    from routeplane.language_model.types import Generation, TextPart

    routeplane_upstream.push(Generation("gen-1", "echo", (TextPart("scripted"),)))
    result = routeplane_gateway().chat("hi")
    assert result.status == 200 and result.text == "scripted"
    assert [c.target.provider for c in routeplane_upstream.calls] == ["mock"]


@pytest.mark.parametrize("mode, warned", [("jwt", True), ("api_keys", False), ("api_keys+jwt", False)])
def test_keys_create_warns_when_the_mode_takes_no_keys(tmp_path: Any, capsys: pytest.CaptureFixture,
                                                       mode: str, warned: bool) -> None:
    """Under auth.mode jwt a key was created silently, and every call with it was a 401."""
    path = _config(tmp_path, mode)
    assert main(["migrate", "--quiet", "--config", path]) == 0
    capsys.readouterr()
    assert main(["keys", "create", "--config", path]) == 0
    out, err = capsys.readouterr()
    assert out.strip()  # the key
    assert ("routeplane: warning: auth.mode is jwt" in err) is warned, err

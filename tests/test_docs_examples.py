"""docs/plugins.md and the README stay true: their python blocks run, and every hook contract is documented."""

from __future__ import annotations

import enum
import inspect
import json
import os
import re
import sys
import textwrap
from importlib import metadata
from typing import Any, Dict, List

import pytest

import routeplane.app
from routeplane.config import ConfigError, parse_config
from routeplane.hooks import language_model as contracts
from routeplane.testing import Gateway

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(ROOT, "docs", "plugins.md")
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def guide_text() -> str:
    with open(GUIDE, encoding="utf-8") as fh:
        return fh.read()


def python_blocks() -> List[str]:
    return [textwrap.dedent(b) for b in _BLOCK.findall(guide_text())]


@pytest.fixture(scope="module")
def namespace() -> Dict[str, Any]:
    """Run every python block in order, in one namespace, as a reader would."""
    ns: Dict[str, Any] = {"__name__": "docs_plugins_examples"}
    for i, block in enumerate(python_blocks()):
        code = compile(block, f"{GUIDE}:python-block-{i}", "exec")
        exec(code, ns)  # noqa: S102 - executing our own documentation is the point
    return ns


def test_guide_has_examples():
    assert len(python_blocks()) >= 5


def test_all_python_blocks_run(namespace):
    assert "BannedPhrasePlugin" in namespace and "BannedPhraseHook" in namespace


def test_pytest_style_examples_pass(namespace, request):
    """The guide's pytest tests, given the fixtures routeplane's pytest11 plugin really registers."""
    tests = [(name, fn) for name, fn in namespace.items() if name.startswith("test_") and callable(fn)]
    assert tests, "the guide shows at least one pytest test"
    for _name, fn in tests:
        fn(**{p: request.getfixturevalue(p) for p in inspect.signature(fn).parameters})


def test_banned_phrase_example_denies_with_400_in_every_form(namespace):
    plugin = namespace["BannedPhrasePlugin"]("Forbidden Phrase")
    gw = Gateway(plugins=[plugin])
    # string system prompt, developer role, and content-part arrays all count as the system prompt
    for system in ({"role": "system", "content": "contains a forbidden phrase here"},
                   {"role": "developer", "content": "FORBIDDEN PHRASE"},
                   {"role": "system", "content": [{"type": "text", "text": "x forbidden phrase y"}]}):
        r = gw.chat([system, {"role": "user", "content": "hi"}])
        assert r.status == 400, system
        assert r.json["error"]["type"] == "invalid_request_error"
        assert "forbidden phrase" not in r.json["error"]["message"].lower(), "the message must not echo the prompt"
        assert r.settlements == []
    streamed = gw.chat([{"role": "system", "content": "forbidden phrase"}, {"role": "user", "content": "x"}],
                       stream=True)
    assert streamed.status == 400, "a deny happens before the stream starts: a real status, not an error frame"


_BASE = {"providers": {"local": {"protocol": "mock"}},
         "models": {"default": {"targets": [{"provider": "local", "model": "echo"}]}}}


@pytest.fixture
def installed_banned_phrase(tmp_path, monkeypatch):
    """The guide's first block installed as the module `routeplane_banned_phrase`, with an entry point."""
    (tmp_path / "routeplane_banned_phrase.py").write_text(python_blocks()[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = metadata.EntryPoint(name="banned-phrase", value="routeplane_banned_phrase:BannedPhrasePlugin",
                             group="routeplane.plugins")
    real = metadata.entry_points

    def entry_points(**kw: Any) -> Any:
        if kw.get("group") == "routeplane.plugins":
            return [ep]
        return real(**kw)

    monkeypatch.setattr(routeplane.app.metadata, "entry_points", entry_points)
    yield ep
    sys.modules.pop("routeplane_banned_phrase", None)


def test_banned_phrase_plugin_loads_from_config_by_entry_point(namespace, installed_banned_phrase):
    """The guide's plugin, installed as a module with an entry point, configured under `plugins:`."""
    app = routeplane.app.build_app(parse_config({**_BASE, "plugins": {"banned-phrase": {"phrase": "jailbreak"}}},
                                                "routeplane.yaml"))
    with app.flask_app().test_client() as client:
        r = client.post("/v1/chat/completions", json={"model": "default", "messages": [
            {"role": "system", "content": "a JAILBREAK attempt"}, {"role": "user", "content": "x"}]})
        assert r.status_code == 400
    with pytest.raises(ConfigError) as info:
        routeplane.app.build_app(parse_config({**_BASE, "plugins": {"banned-phrase": {"phrse": "typo"}}},
                                              "routeplane.yaml"))
    assert "plugins.banned-phrase" in str(info.value)


def _blocks(lang: str) -> List[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", guide_text(), re.S | re.M)


def test_yaml_blocks_configure_the_guides_plugin(installed_banned_phrase):
    """Every `yaml` block of the guide is a config section that starts a gateway whose plugin denies the phrase."""
    import yaml

    blocks = _blocks("yaml")
    assert len(blocks) >= 2
    for block in blocks:
        section = yaml.safe_load(block)
        app = routeplane.app.build_app(parse_config({**_BASE, **section}, "routeplane.yaml"))
        phrase = section["plugins"]["banned-phrase"]["phrase"]
        with app.flask_app().test_client() as client:
            r = client.post("/v1/chat/completions", json={"model": "default", "messages": [
                {"role": "system", "content": phrase.upper()}, {"role": "user", "content": "x"}]})
            assert r.status_code == 400, block


def test_packaging_blocks_declare_the_entry_point_the_scaffold_writes():
    """The `ini` and `toml` blocks parse, declare the same entry point, and it is what `routeplane plugin new
    banned-phrase` writes (the guide says so)."""
    import configparser

    from routeplane.scaffold import _files

    tomllib = pytest.importorskip("tomllib")
    (ini,), (toml,) = _blocks("ini"), _blocks("toml")
    cfg = configparser.ConfigParser()
    cfg.read_string(ini)
    from_ini = [line.strip() for line in cfg["options.entry_points"]["routeplane.plugins"].splitlines() if line.strip()]
    from_toml = tomllib.loads(toml)["project"]["entry-points"]["routeplane.plugins"]
    assert from_ini == [f"{name} = {value}" for name, value in from_toml.items()]
    assert from_toml == {"banned-phrase": "routeplane_banned_phrase:BannedPhrasePlugin"}
    scaffold = configparser.ConfigParser()
    scaffold.read_string(_files("banned-phrase")["setup.cfg"])
    assert scaffold["options.entry_points"]["routeplane.plugins"].strip() == from_ini[0]


# --- meta-tests: the guide documents every contract ------------------------------------------


def _module_classes() -> Dict[str, type]:
    return {name: obj for name, obj in vars(contracts).items()
            if inspect.isclass(obj) and obj.__module__ == contracts.__name__}


def test_every_hook_contract_is_documented():
    text = guide_text()
    hooks = [name for name, cls in _module_classes().items() if issubclass(cls, contracts.LanguageModelHook)]
    assert len(hooks) >= 7  # the marker + six contracts
    missing = [name for name in hooks if f"`{name}`" not in text and f"{name}." not in text]
    assert not missing, f"docs/plugins.md does not mention hook contract(s): {missing}"


def test_every_hook_method_is_documented():
    text = guide_text()
    missing = [f"{contract.__name__}.{m}" for contract, methods in contracts.HOOK_KINDS.values()
               for m in methods if m not in text]
    assert not missing, f"docs/plugins.md does not mention: {missing}"


def test_every_decision_value_is_documented():
    text = guide_text()
    values = [name for name, cls in _module_classes().items()
              if not issubclass(cls, contracts.LanguageModelHook) and not name.endswith("Kind")]
    assert {"HookDecision", "DenyReason", "FallbackDecision", "StreamAction", "StreamInterest", "Outcome",
            "Phase"} <= set(values)
    missing = [name for name in values if name not in text]
    assert not missing, f"docs/plugins.md does not mention decision value(s): {missing}"
    for cls in (contracts.DenyReason, contracts.HookDecision, contracts.FallbackDecision, contracts.StreamAction):
        for name, member in vars(cls).items():
            if isinstance(member, classmethod):
                assert f"{cls.__name__}.{name}(" in text or f"`{name}(" in text, f"{cls.__name__}.{name} undocumented"
    for enum_cls in (contracts.Outcome, contracts.StreamInterest):
        for member in enum_cls:
            if isinstance(member, enum.Flag) and member.name in ("NONE",):
                continue
            assert member.name in text, f"{enum_cls.__name__}.{member.name} undocumented"


# --- README quickstart ----------------------------------------------------------------------------


def _readme_blocks(lang: str) -> List[str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


@pytest.mark.e2e
def test_readme_quickstart_snippets_work_against_the_default_gateway(gateway_process):
    """The README's curl and openai snippets, pointed at a real gunicorn on a free port, print what they claim."""
    import shutil
    import subprocess

    gw = gateway_process()  # no config: the built-in mock-only default, as `make serve` on a fresh clone
    port = str(gw.port)
    curl = [b for b in _readme_blocks("sh") if "curl" in b]
    py = [b for b in _readme_blocks("python") if "OpenAI(" in b]
    assert curl and py, "the README shows a curl and an openai SDK snippet"
    assert "4356" in curl[0] and "4356" in py[0], "the README documents the default port"
    if shutil.which("curl"):
        cmd = curl[0].replace("4356", port).replace("\\\n", " ")
        out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["choices"][0]["message"]["content"] == "You said: hello"
    script = py[0].replace("4356", port)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "You said: hello"
    assert "total_tokens=" in lines[-1], "the last streamed chunk is the usage chunk"

"""`routeplane plugin new NAME`: writes a plugin package whose tests pass as generated."""

from __future__ import annotations

import keyword
import os
import re
from typing import Dict

# A plugin id as the docs write them (`banned-phrase`, `word_filter`): words of lower-case letters and
# digits joined by single '-' or '_'. The package is `routeplane_` + the id with '-' as '_'.
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_MAX_NAME = 41
# Ids routeplane's own plugins (and the core schema's migration history) use. A plugin with one of
# them would share that one's migration history, and under `plugins:` would replace it (an entry
# point is found before a built-in): `plugins: {spend_log: …}` would then record no spend.
RESERVED_IDS = ("routeplane", "auth", "budget", "spend_log", "request_log", "mcp")


def module_name(name: str) -> str:
    """The Python package suffix of plugin `name`: `banned-phrase` -> `banned_phrase`."""
    return name.replace("-", "_")


def _files(name: str) -> Dict[str, str]:
    module = module_name(name)
    pkg = f"routeplane_{module}"
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name)) + "Plugin"
    return {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61", "wheel"]\nbuild-backend = "setuptools.build_meta"\n',
        "setup.cfg": f"""[metadata]
name = routeplane-{name.replace('_', '-')}
version = 0.1.0
description = A routeplane plugin: {name}

[options]
packages = find:
install_requires =
    routeplane

[options.packages.find]
include = {pkg}, {pkg}.*

[options.package_data]
# PEP 561: type checkers read the package's annotations (routeplane ships its own py.typed).
{pkg} = py.typed

[options.entry_points]
routeplane.plugins =
    {name} = {pkg}:{cls}

[tool:pytest]
testpaths = tests
# The package imports from this directory, so `pytest` runs before `pip install -e .` too.
pythonpath = .
filterwarnings = error
""",
        f"{pkg}/__init__.py": f'''"""routeplane plugin `{name}`: denies requests whose last user message contains a blocked word."""

from __future__ import annotations

from marshmallow import Schema, fields

from routeplane import AppBuilder, Plugin, PluginId
from routeplane.hooks.language_model import DenyReason, HookDecision, PreRequestHook
from routeplane.language_model.context import PipelineContext


class {cls}Options(Schema):
    blocked_word = fields.String(load_default="forbidden")


class BlockedWordHook(PreRequestHook):
    def __init__(self, word: str) -> None:
        self.word = word.lower()

    def check(self, ctx: PipelineContext) -> HookDecision:
        last = ctx.prompt.messages[-1].text().lower() if ctx.prompt.messages else ""
        if self.word in last:
            return HookDecision.deny(DenyReason.bad_request(f"The word {{self.word!r}} is not allowed."))
        return HookDecision.allow()


class {cls}(Plugin):
    id = PluginId("{name}")
    options_schema = {cls}Options

    def __init__(self, blocked_word: str = "forbidden") -> None:
        self.blocked_word = blocked_word

    def install(self, app: AppBuilder) -> None:
        app.language_model_builder().pre_request_hook(BlockedWordHook(self.blocked_word))
''',
        f"{pkg}/py.typed": "",
        f"tests/test_{module}.py": f'''"""Tests of the `{name}` plugin with routeplane's kit: synchronous, in-process, no network."""

from {pkg} import {cls}
from routeplane.testing import Gateway, check_plugin


def test_allows_ordinary_requests():
    gw = Gateway(plugins=[{cls}()])
    result = gw.chat("hello")
    assert result.status == 200
    assert result.json["choices"][0]["message"]["content"] == "You said: hello"
    assert len(result.settlements) == 1


def test_denies_the_blocked_word():
    gw = Gateway(plugins=[{cls}(blocked_word="pineapple")])
    result = gw.chat("I like PINEAPPLE")
    assert result.status == 400
    assert "pineapple" in result.json["error"]["message"]
    assert result.settlements == []  # a denied request is never settled


def test_keeps_the_plugin_contract():
    report = check_plugin({cls}())
    assert report.hooks["pre_request_hook"] == 1
''',
        "README.md": f"# routeplane-{name.replace('_', '-')}\n\nA routeplane plugin. Install it (`pip install -e .`) and "
                     f"enable it in `routeplane.yaml`:\n\n```yaml\nplugins:\n  {name}: {{blocked_word: forbidden}}\n```\n\n"
                     "Run its tests with `pytest`.\n",
    }


def new_plugin(name: str, directory: str = ".") -> str:
    """Write the package into `directory/routeplane-NAME`; returns that path."""
    if len(name) > _MAX_NAME or not _NAME.match(name) or keyword.iskeyword(module_name(name)):
        raise ValueError(f"invalid plugin name {name!r}: use lower-case words of letters and digits joined by "
                         f"single '-' or '_' (e.g. banned-phrase), at most {_MAX_NAME} characters, not a "
                         "Python keyword")
    if name in RESERVED_IDS:
        raise ValueError(f"invalid plugin name {name!r}: routeplane's own plugins use it (reserved: "
                         f"{', '.join(RESERVED_IDS)}); pick another")
    root = os.path.join(directory, f"routeplane-{name.replace('_', '-')}")
    if os.path.exists(root):
        raise FileExistsError(f"{root} already exists")
    for rel, text in _files(name).items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    return root

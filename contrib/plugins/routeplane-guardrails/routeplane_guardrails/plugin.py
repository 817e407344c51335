"""The GuardrailsPlugin: validated options in, three hooks installed, counters out."""

from __future__ import annotations

from typing import Any, Dict, Mapping

from routeplane.app import AppBuilder, Plugin, PluginId

from .hooks import DowngoingResponseCheck, DowngoingStreamCheck, UpgoingCheck
from .options import GuardrailOptionsSchema, validate_options
from .rules import RuleSet, Stats, compile_rules


class GuardrailsPlugin(Plugin):
    """`GuardrailsPlugin(downgoing={"api_keys": "redact"})`, or `plugins: {guardrails: {...}}` in the config.

    Invalid options raise marshmallow's ValidationError naming the key; from
    the config file `routeplane check` reports them as `plugins.guardrails.<key>`.
    """

    id = PluginId("guardrails")
    options_schema = GuardrailOptionsSchema

    def __init__(self, **options: Any) -> None:
        self.options = validate_options(options)
        self.enabled: bool = self.options["enabled"]
        self.rules: RuleSet = compile_rules(self.options)
        self._stats = Stats()

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "GuardrailsPlugin":
        return cls(**dict(options))

    def install(self, app: AppBuilder) -> None:
        if not self.enabled:
            return
        lm = app.language_model_builder()
        lm.pre_request_hook(UpgoingCheck(self.rules, self._stats))
        lm.execution_hook(DowngoingResponseCheck(self.rules, self._stats))
        lm.stream_hook(DowngoingStreamCheck(self.rules, self._stats))

    def stats(self) -> Dict[str, Dict[str, Dict[str, int]]]:
        """Findings in this process, `{direction: {detector: {action: count}}}`; summed over workers in /admin/metrics."""
        return self._stats.snapshot()

"""Hook registration shared by the MCP and ACP builders: validated at registration, like pluggy does."""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Mapping, Tuple


class HookBuilder:
    """Registers one pipeline's hooks; a hook of another pipeline, a missing method or a
    wrong arity is a TypeError naming the plugin. Subclasses set the three class attributes."""

    kinds: Mapping[str, Tuple[type, Mapping[str, int]]] = {}
    marker: type = object
    pipeline: str = ""  # "MCP", "ACP"

    def __init__(self) -> None:
        self._hooks: Dict[str, List[Tuple[str, Any]]] = {kind: [] for kind in self.kinds}
        self._current_plugin = "app"

    def pre_request_hook(self, hook: Any) -> Any:
        return self._register("pre_request_hook", hook)

    def route_hook(self, hook: Any) -> Any:
        return self._register("route_hook", hook)

    def observe_hook(self, hook: Any) -> Any:
        return self._register("observe_hook", hook)

    def _register(self, kind: str, hook: Any) -> Any:
        contract, methods = self.kinds[kind]
        who = f"{type(hook).__name__} (plugin {self._current_plugin!r})"
        if not isinstance(hook, self.marker):
            raise TypeError(f"{who} is not an {self.pipeline} hook (a hook of another pipeline cannot be registered "
                            f"on the {self.pipeline} pipeline); {kind}() takes an instance of {contract.__name__}")
        if not isinstance(hook, contract):
            raise TypeError(f"{who} is not a {contract.__name__}; {kind}() takes an instance of it")
        for name, arity in methods.items():
            method = getattr(hook, name, None)
            if not callable(method):
                raise TypeError(f"{who} has no method {name}()")
            try:
                inspect.signature(method).bind(*([None] * arity))
            except TypeError:
                raise TypeError(f"{who}.{name}() must take {arity} argument(s) besides self") from None
        self._hooks[kind].append((self._current_plugin, hook))
        return self

    def hooks(self, kind: str) -> Tuple[Any, ...]:
        return tuple(h for _pid, h in self._hooks[kind])

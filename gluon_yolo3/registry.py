"""Registries: one `Registry` class, and the module-level registries every component lives in.

    @LOSSES.register("xy_bce")
    class XYBCE(gluon.HybridBlock): ...

    term = LOSSES.build({"type": "xy_bce", "weight": 1.0})

`build(cfg)` pops `type`, looks it up and calls the registered class or function with the remaining
keys as keyword arguments (plus any `**extra` the caller passes, which the recipe cannot override).
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Dict, Mapping


class RegistryError(KeyError):
    """An unknown or duplicate registry name, or a bad build config."""

    def __str__(self):  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


def closest(name: str, choices) -> str | None:
    """The closest string to `name` among `choices`, or None when nothing is similar."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return match[0] if match else None


class Registry:
    """A named mapping from strings to classes or functions that build a component."""

    def __init__(self, name: str):
        self.name = name
        self._entries: Dict[str, Callable] = {}

    def register(self, name: str | None = None, *, override: bool = False):
        """Decorator registering a class or function under `name` (default: its `__name__`)."""

        def decorator(obj: Callable) -> Callable:
            key = name or obj.__name__
            if key in self._entries and not override and self._entries[key] is not obj:
                raise RegistryError(
                    f"{self.name}: '{key}' is already registered by "
                    f"{_where(self._entries[key])}; pass override=True to replace it")
            self._entries[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> Callable:
        if name not in self._entries:
            hint = closest(name, self._entries)
            raise RegistryError(
                f"{self.name}: unknown type '{name}'"
                + (f" (did you mean '{hint}'?)" if hint else "")
                + f"; available: {', '.join(sorted(self._entries)) or '(none)'}")
        return self._entries[name]

    def build(self, cfg: Mapping[str, Any] | str, **extra) -> Any:
        """Build the component `cfg['type']` with the other keys of `cfg` (and `extra`) as arguments."""
        if isinstance(cfg, str):
            cfg = {"type": cfg}
        if not isinstance(cfg, Mapping) or "type" not in cfg:
            raise RegistryError(f"{self.name}: a component config needs a 'type' key, got {cfg!r}")
        kwargs = {k: v for k, v in cfg.items() if k != "type"}
        obj = self.get(cfg["type"])
        clash = sorted(set(kwargs) & set(extra))
        if clash:
            raise RegistryError(
                f"{self.name}: '{cfg['type']}' gets {', '.join(repr(c) for c in clash)} from elsewhere in the "
                f"recipe; remove {'it' if len(clash) == 1 else 'them'} from this component's config")
        _check_kwargs(self.name, cfg["type"], obj, {**kwargs, **extra})
        return obj(**kwargs, **extra)

    def names(self):
        return sorted(self._entries)

    def describe(self) -> Dict[str, str]:
        """name -> the first paragraph of the entry's own docstring, on one line."""
        out = {}
        for key in self.names():
            doc = inspect.cleandoc(self._entries[key].__doc__ or "")   # its own, not a base class's
            out[key] = " ".join(doc.split("\n\n")[0].split())
        return out

    def __contains__(self, name):
        return name in self._entries

    def __repr__(self):
        return f"Registry({self.name!r}, {self.names()})"


def _where(obj) -> str:
    module = getattr(obj, "__module__", "?")
    return f"{module}.{getattr(obj, '__qualname__', repr(obj))}"


def _check_kwargs(registry: str, type_name: str, obj: Callable, kwargs: Mapping[str, Any]):
    """Name an unknown argument with the closest accepted one, before the constructor sees it."""
    accepted = _accepted_arguments(obj)
    if accepted is None:
        return
    for key in kwargs:
        if key not in accepted:
            hint = closest(key, accepted)
            raise RegistryError(
                f"{registry}: '{type_name}' takes no argument '{key}'"
                + (f" (did you mean '{hint}'?)" if hint else "")
                + f"; it accepts: {', '.join(accepted) or '(nothing)'}")


def _accepted_arguments(obj: Callable):
    """Keyword arguments `obj` accepts, following `**kwargs` up a class's bases; None if open-ended."""
    functions = [c.__init__ for c in obj.__mro__ if "__init__" in vars(c)] if inspect.isclass(obj) else [obj]
    accepted = []
    for function in functions:
        try:
            params = inspect.signature(function).parameters
        except (TypeError, ValueError):
            return None
        accepted += [n for n, p in params.items()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self" and n not in accepted]
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return accepted
    return None


BACKBONES = Registry("BACKBONES")
NECKS = Registry("NECKS")
HEADS = Registry("HEADS")
ASSIGNERS = Registry("ASSIGNERS")
LOSSES = Registry("LOSSES")
NMS = Registry("NMS")
DATASETS = Registry("DATASETS")
TRANSFORMS = Registry("TRANSFORMS")
OPTIMIZERS = Registry("OPTIMIZERS")
LR_SCHEDULES = Registry("LR_SCHEDULES")
METRICS = Registry("METRICS")

ALL = {r.name: r for r in (BACKBONES, NECKS, HEADS, ASSIGNERS, LOSSES, NMS, DATASETS, TRANSFORMS,
                           OPTIMIZERS, LR_SCHEDULES, METRICS)}

"""Registries: one `Registry` class, and the module-level registries every component lives in.

    @LOSSES.register("xy_bce")
    class XYBCE(gluon.HybridBlock): ...

    term = LOSSES.build({"type": "xy_bce", "weight": 1.0})

`build(cfg)` pops `type`, looks it up and calls the registered class or function with the remaining
keys as keyword arguments (plus any `**extra` the caller passes, which the recipe cannot override).
`build(cfg, where="loss.terms.0", own_keys=("weight",))`: errors name the config's place in the recipe, and
the caller's own keys (read by the caller, not passed on) count as valid, so a misspelling of them is named.

Each registry knows the modules that hold its built-in entries (`locations`, as MMEngine's registries do) and
imports them the first time it is asked for an entry, a name list, or a new registration: no caller has to
import anything first, and a plugin registered later cannot collide with a built-in unnoticed.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .schema import shown

LOG = logging.getLogger(__name__)


class RegistryError(KeyError):
    """An unknown or duplicate registry name, or a bad build config."""

    def __str__(self):  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


def closest(name: str, choices) -> str | None:
    """The closest string to `name` among `choices`, or None when nothing is similar."""
    if len(str(name)) > 100:          # no name is that long; difflib would take its time
        return None
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return match[0] if match else None


class Registry:
    """A named mapping from strings to classes or functions that build a component.

    `locations`: the modules holding the built-in entries, imported on first use."""

    def __init__(self, name: str, locations: Sequence[str] = ()):
        self.name = name
        self.locations = tuple(locations)
        self._entries: Dict[str, Callable] = {}
        self._imported = not self.locations
        self._importing = False

    def import_builtins(self):
        """Import the modules of `locations` once (their decorators register the built-in entries)."""
        if self._imported or self._importing:
            return
        self._importing = True
        try:
            for module in self.locations:
                importlib.import_module(module)
            self._imported = True
        finally:
            self._importing = False

    def register(self, name: str | None = None, *, override: bool = False):
        """Decorator registering a class or function under `name` (default: its `__name__`)."""

        def decorator(obj: Callable) -> Callable:
            if not str(getattr(obj, "__module__", "")).startswith("gluon_yolo3."):
                self.import_builtins()      # a plugin's name must not shadow a built-in unnoticed
            key = name or obj.__name__
            old = self._entries.get(key)
            if old is not None and old is not obj:
                if not override:
                    raise RegistryError(f"{self.name}: '{key}' is already registered by {_where(old)}; pass "
                                        "override=True to replace it")
                if _where(old) != _where(obj):        # the same class defined again (a re-import) says nothing
                    LOG.warning(f"warning: {self.name}: '{key}' of {_where(old)} is replaced by {_where(obj)} "
                                "(override=True)")
            self._entries[key] = obj
            return obj

        return decorator

    def get(self, name: str, *, where: str = "") -> Callable:
        """The entry registered as `name`; `where` (the config's recipe key) prefixes the error."""
        self.import_builtins()
        if not isinstance(name, str):
            raise RegistryError(f"{_at(where)}{self.name}: a type is a name, got {shown(name)}")
        if name not in self._entries:
            hint = closest(name, self._entries)
            raise RegistryError(
                f"{_at(where)}{self.name}: unknown type {shown(name)}"
                + (f" (did you mean '{hint}'?)" if hint else "")
                + f"; available: {', '.join(sorted(self._entries)) or '(none)'}")
        return self._entries[name]

    def build(self, cfg: Mapping[str, Any] | str, *, where: str = "", own_keys: Sequence[str] = (),
              **extra) -> Any:
        """Build the component `cfg['type']` with the other keys of `cfg` (and `extra`) as arguments.

        `where`: the config's recipe key, named in errors. `own_keys`: keys of `cfg` its caller reads
        itself; they are valid, suggested for a misspelling, and not passed on.
        """
        if isinstance(cfg, str):
            cfg = {"type": cfg}
        if not isinstance(cfg, Mapping) or "type" not in cfg:
            raise RegistryError(f"{_at(where)}{self.name}: a component config needs a 'type' key, got "
                                f"{shown(cfg)}")
        kwargs = {k: v for k, v in cfg.items() if k != "type" and k not in own_keys}
        obj = self.get(cfg["type"], where=where)
        label = f"{_at(where)}{self.name}: {shown(cfg['type'])}"
        clash = sorted(set(kwargs) & set(extra))
        if clash:
            raise RegistryError(
                f"{label} gets {', '.join(repr(c) for c in clash)} from elsewhere in the "
                f"recipe; remove {'it' if len(clash) == 1 else 'them'} from this component's config")
        _check_kwargs(label, obj, {**kwargs, **extra}, own_keys)
        return obj(**kwargs, **extra)

    def names(self):
        self.import_builtins()
        return sorted(self._entries)

    def describe(self) -> Dict[str, str]:
        """name -> the first paragraph of the entry's own docstring, on one line."""
        out = {}
        for key in self.names():
            doc = inspect.cleandoc(self._entries[key].__doc__ or "")   # its own, not a base class's
            out[key] = " ".join(doc.split("\n\n")[0].split())
        return out

    def arguments(self, name: str) -> Optional[List[inspect.Parameter]]:
        """The arguments entry `name` takes from a recipe, with their defaults (`inspect.Parameter`), following
        `**kwargs` up a class's bases as `build` checks them; None when it takes any keyword."""
        parameters = _accepted_parameters(self.get(name))
        return None if parameters is None else parameters[0]

    def __contains__(self, name):
        self.import_builtins()
        return name in self._entries

    def __repr__(self):
        return f"Registry({self.name!r}, {self.names()})"


def _where(obj) -> str:
    module = getattr(obj, "__module__", "?")
    return f"{module}.{getattr(obj, '__qualname__', repr(obj))}"


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def _check_kwargs(label: str, obj: Callable, kwargs: Mapping[str, Any], own_keys: Sequence[str] = ()):
    """Name an unknown argument with the closest accepted one, before the constructor sees it."""
    arguments = _accepted_arguments(obj)
    if arguments is None:
        return
    public, internal = arguments
    valid = list(own_keys) + [a for a in public if a not in own_keys]
    for key in kwargs:
        if key not in valid and key not in internal:
            hint = closest(key, valid)
            raise RegistryError(
                f"{label} takes no argument {shown(key)}"
                + (f" (did you mean '{hint}'?)" if hint else "")
                + f"; it accepts: {', '.join(valid) or '(nothing)'}")


# Gluon's Block, HybridBlock and SymbolBlock: their arguments (`prefix`, `params`, which subclasses often
# spell out too) are internals, accepted but never listed or suggested
_INTERNAL_MODULES = ("mxnet.gluon.block",)


def _accepted_arguments(obj: Callable) -> Optional[Tuple[List[str], List[str]]]:
    """(arguments, internal arguments) `obj` takes by keyword, following `**kwargs` up a class's bases;
    None if open-ended. The internal ones are those of Gluon's own Block classes."""
    parameters = _accepted_parameters(obj)
    if parameters is None:
        return None
    public, internal = parameters
    return [p.name for p in public], internal


def _accepted_parameters(obj: Callable) -> Optional[Tuple[List[inspect.Parameter], List[str]]]:
    """(parameters, internal argument names) as `_accepted_arguments`, with their defaults. A class's chain of
    `**kwargs` ends at `object`, which takes nothing."""
    is_class = inspect.isclass(obj)
    classes = [c for c in obj.__mro__ if "__init__" in vars(c) and c is not object] if is_class else []
    internal = list(dict.fromkeys(p.name for c in classes if c.__module__ in _INTERNAL_MODULES
                                  for p in _parameters(c.__init__) or () if p.kind is not p.VAR_KEYWORD))
    accepted: Dict[str, inspect.Parameter] = {}
    for function in [c.__init__ for c in classes] if is_class else [obj]:
        params = _parameters(function)
        if params is None:
            return None
        for p in params:
            if p.kind is not p.VAR_KEYWORD and p.name not in accepted:
                accepted[p.name] = p
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    else:
        if not is_class:
            return None
    return [p for name, p in accepted.items() if name not in internal], internal


def _parameters(function: Callable) -> Optional[List[inspect.Parameter]]:
    """The parameters `function` takes by keyword (a `**kwargs` included); None without a signature."""
    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return None
    return [p for n, p in params.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.VAR_KEYWORD) and n != "self"]


_P = "gluon_yolo3."
BACKBONES = Registry("BACKBONES", [_P + "models.backbones.darknet", _P + "models.backbones.csp_darknet",
                                   _P + "models.backbones.mobilenet"])
NECKS = Registry("NECKS", [_P + "models.neck", _P + "models.spp", _P + "models.gluoncv_neck"])
HEADS = Registry("HEADS", [_P + "models.head"])
ASSIGNERS = Registry("ASSIGNERS", [_P + "targets.assigner", _P + "targets.multi_anchor", _P + "targets.gluoncv"])
LOSSES = Registry("LOSSES", [_P + "losses.terms", _P + "losses.iou", _P + "losses.guide"])
NMS = Registry("NMS", [_P + "postprocess.nms"])
DATASETS = Registry("DATASETS", [_P + "data.voc", _P + "data.coco", _P + "data.yolo_txt", _P + "data.synthetic",
                                 _P + "data.folder"])
TRANSFORMS = Registry("TRANSFORMS", [_P + "data.transforms", _P + "data.mix"])
OPTIMIZERS = Registry("OPTIMIZERS", [_P + "optim.optimizers"])
LR_SCHEDULES = Registry("LR_SCHEDULES", [_P + "optim.schedules"])
METRICS = Registry("METRICS", [_P + "evaluation.voc", _P + "evaluation.coco"])
HOOKS = Registry("HOOKS", [_P + "engine.hooks"])

ALL = {r.name: r for r in (BACKBONES, NECKS, HEADS, ASSIGNERS, LOSSES, NMS, DATASETS, TRANSFORMS,
                           OPTIMIZERS, LR_SCHEDULES, METRICS, HOOKS)}


def import_all_builtins():
    """Import every registry's built-in entries now (for a listing of everything, e.g. `gluon-yolo3 components`)."""
    for registry in ALL.values():
        registry.import_builtins()

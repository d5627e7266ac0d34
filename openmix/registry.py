"""Name -> factory registries (policies, pairings, losses, schedules), filled by decorators.

``Registry.build`` checks keywords before calling the factory: an unknown keyword names the
accepted ones and the closest match, and keywords from timm's ``Mixup`` or torch's losses are
translated into openmix's names in the message.

Plug-ins: an installed package adds entries through the entry-point group ``openmix.<plural>``
(``openmix.policies``, ``openmix.losses``, ``openmix.pairings``, ``openmix.schedules``), e.g.
``flipmix = "my_policies:FlipMix"``. They are loaded on the first lookup of a name that is not
built in, or when the names are listed, so ``import openmix`` stays light.
"""
from __future__ import annotations

import difflib
import inspect
import warnings
from importlib import metadata
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

T = TypeVar("T")

# keywords other libraries use for the same idea -> what to write in openmix (by registry kind)
KEYWORD_HINTS: Dict[str, Dict[str, str]] = {
    "policy": {
        "mixup_alpha": "timm's mixup_alpha is alpha of build_policy('mixup', alpha=...)",
        "cutmix_alpha": "timm's cutmix_alpha is alpha of build_policy('cutmix', alpha=...)",
        "prob": "timm's prob is p (probability of mixing a batch, or a row outside batch mode)",
        "switch_prob": ("timm's switch_prob: build_policy('choice', policies=[{'name': 'mixup'}, "
                        "{'name': 'cutmix'}], probs=[1 - switch_prob, switch_prob])"),
        "label_smoothing": ("label smoothing belongs to the loss: build_loss('soft_ce', smoothing=...) "
                            "or mb.soft_targets(num_classes, smoothing=...)"),
        "smoothing": ("label smoothing belongs to the loss: build_loss('soft_ce', smoothing=...) "
                      "or mb.soft_targets(num_classes, smoothing=...)"),
        "num_classes": "num_classes goes to mb.soft_targets(num_classes); the losses read it from the logits",
        "correct_lam": "openmix's cutmix always recomputes λ from the clipped box (timm's correct_lam=True)",
        "cutmix_minmax": "openmix's cutmix draws the box area from λ ~ Beta(alpha, alpha); there is no minmax range",
        "mix_prob": "p is the probability of mixing",
    },
    "loss": {
        "label_smoothing": "torch's label_smoothing is smoothing, e.g. build_loss('soft_ce', smoothing=0.1)",
        "reduction": "openmix's losses return the mean over rows; there is no reduction argument",
    },
}


def accepted_keywords(factory: Callable[..., Any]) -> Optional[Tuple[List[str], List[str]]]:
    """(all keyword names, required ones) of ``factory``, or None when it takes any keyword.

    For a class, follows ``**kwargs`` up the MRO: a subclass that passes ``**kwargs`` to its
    base accepts the base's keywords too.
    """
    if inspect.isclass(factory):
        inits = [c.__dict__["__init__"] for c in factory.__mro__ if "__init__" in c.__dict__ and c is not object]
    else:
        inits = [factory]
    names: List[str] = []
    required: List[str] = []
    for init in inits:
        try:
            params = list(inspect.signature(init).parameters.values())
        except (TypeError, ValueError):
            return None
        if inspect.isclass(factory):
            params = params[1:]                      # self
        open_ended = False
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                open_ended = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names:
                names.append(p.name)
                if p.default is p.empty:
                    required.append(p.name)
        if not open_ended:
            return names, required
    return None


class Registry:
    """A case-sensitive mapping from a name to a class or factory function.

    ``kind`` and ``plural`` are only used in error messages ("policy"/"policies", "loss"/"losses").
    """

    def __init__(self, kind: str, plural: str = "") -> None:
        self.kind = kind
        self.plural = plural or (kind + "es" if kind.endswith(("s", "x", "sh", "ch")) else kind + "s")
        self.keyword_hints: Dict[str, str] = dict(KEYWORD_HINTS.get(kind, {}))
        self.entry_point_group = f"openmix.{self.plural}"
        self._entries: Dict[str, Callable[..., Any]] = {}
        self._plugin_errors: Optional[Dict[str, str]] = None      # None until plug-ins are loaded

    def load_plugins(self) -> Dict[str, str]:
        """Registers the entry points of ``openmix.<plural>`` once; returns {name: error} of those
        that failed to load (each also warned about)."""
        if self._plugin_errors is not None:
            return self._plugin_errors
        self._plugin_errors = {}
        for entry in metadata.entry_points(group=self.entry_point_group):
            try:
                obj = entry.load()
                if self._entries.get(entry.name) is not obj:
                    self.register(entry.name)(obj)      # raises if the name is taken by another object
            except Exception as exc:                    # a broken plug-in must not hide the others
                error = f"{self.kind} plug-in {entry.name!r} ({entry.value}, entry-point group " \
                        f"{self.entry_point_group!r}) failed to load: {type(exc).__name__}: {exc}"
                self._plugin_errors[entry.name] = error
                warnings.warn(error, RuntimeWarning, stacklevel=3)
        return self._plugin_errors

    def register(self, name: str) -> Callable[[T], T]:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty str, got {name!r}")

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered to {self._entries[name]!r}")
            self._entries[name] = obj
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Removes ``name`` (for tests and plug-ins that register temporarily)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> Callable[..., Any]:
        if isinstance(name, str) and name not in self._entries and name in self.load_plugins():
            raise ImportError(self._plugin_errors[name])
        if not isinstance(name, str) or name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=1) if isinstance(name, str) else []
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown {self.kind} {name!r}; known {self.plural}: {', '.join(self.names())}{hint}")
        return self._entries[name]

    def check_keywords(self, name: str, kwargs: Dict[str, Any]) -> None:
        """Raises TypeError naming unknown or missing keywords of ``name``'s factory."""
        accepted = accepted_keywords(self.get(name))
        if accepted is None:
            return
        names, required = accepted
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            lines = [f"{self.kind} {name!r} got unknown keyword(s) {', '.join(map(repr, unknown))}; "
                     f"accepted: {', '.join(names) or '(none)'}"]
            for key in unknown:
                close = difflib.get_close_matches(key, names, n=1)
                if key in self.keyword_hints:
                    lines.append(f"  {key}: {self.keyword_hints[key]}")
                elif close:
                    lines.append(f"  {key}: did you mean {close[0]!r}?")
            raise TypeError("\n".join(lines))
        missing = [k for k in required if k not in kwargs]
        if missing:
            raise TypeError(f"{self.kind} {name!r} needs keyword(s) {', '.join(map(repr, missing))}; "
                            f"accepted: {', '.join(names)}")

    def build(self, name: str, **kwargs: Any) -> Any:
        self.check_keywords(name, kwargs)
        return self.get(name)(**kwargs)

    def names(self) -> List[str]:
        self.load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name not in self._entries:
            self.load_plugins()
        return name in self._entries

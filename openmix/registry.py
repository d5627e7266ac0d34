"""Name -> factory registries (policies, pairings, losses), filled by decorators."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, TypeVar

T = TypeVar("T")


class Registry:
    """A case-sensitive mapping from a name to a class or factory function.

    ``kind`` is only used in error messages ("policy", "loss", ...).
    """

    def __init__(self, kind: str, plural: str = "") -> None:
        self.kind = kind
        self.plural = plural or kind + "s"
        self._entries: Dict[str, Callable[..., Any]] = {}

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
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; known {self.plural}: {', '.join(self.names())}")
        return self._entries[name]

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

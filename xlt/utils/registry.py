"""One generic registry: a name -> item table filled by a decorator, used for task specs, raw-file
readers, hub-row mappers, mixtures (xlt/tasks), featurizers (xlt/data) and heads (xlt/modeling).

The modules that register items (plugins) are imported by their package's ``__init__``, never by
the module that holds the registry, so no module imports a module that imports it back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Registry(dict[str, T]):
    """A dict of named items (``what`` names them in errors) that refuses a name registered twice."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def add(self, name: str, item: T) -> T:
        """Register ``item`` as ``name``; a second item of the same name is a programming error."""
        if name in self:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator registering the decorated function or class as ``name``."""

        def wrap(item: T) -> T:
            return self.add(name, item)

        return wrap

"""A module imported on first use: ``requests = lazy_import("requests")``.

The HTTP stack (requests, urllib3, and what they pull in: about 0.1-0.2 s and 10 MB) is
needed only once a request is made; ``ohpub -V``, ``help``, ``completion``, ``status`` and
``verify`` never make one. A module that names ``requests`` at its top binds this stand-in
instead (and imports the real one under ``TYPE_CHECKING`` for type checkers): the first
attribute looked up on it (``requests.Session``, ``requests.exceptions``) imports the
real module, once, under a lock, and every later lookup goes straight to it.
"""

from __future__ import annotations

import importlib
import threading
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands in for the module ``name`` until an attribute of it is needed."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_lock"] = threading.Lock()
        self.__dict__["_lazy_module"] = None

    def _lazy_load(self) -> types.ModuleType:
        module = self.__dict__["_lazy_module"]
        if module is None:
            with self.__dict__["_lazy_lock"]:
                module = self.__dict__["_lazy_module"]
                if module is None:
                    module = importlib.import_module(self.__name__)
                    self.__dict__["_lazy_module"] = module
        return module  # type: ignore[no-any-return]

    def __getattr__(self, attr: str) -> Any:  # only for names the stand-in lacks
        value = getattr(self._lazy_load(), attr)
        self.__dict__[attr] = value
        return value

    def __dir__(self) -> list[str]:
        return dir(self._lazy_load())


def lazy_import(name: str) -> Any:
    """A stand-in for module ``name`` that imports it on first attribute access."""
    return LazyModule(name)


__all__ = ["LazyModule", "lazy_import"]

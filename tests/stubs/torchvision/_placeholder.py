"""Placeholders for torchvision names that timm imports but the EdgeTAM oracle never calls."""

from __future__ import annotations


def placeholder(module: str, name: str) -> type:
    """A class standing for ``module.name``: importable and subclassable, unusable.

    timm subclasses some transforms at import time (so a class is needed, not a
    function); instantiating one means a code path the oracle harness does not expect.
    """

    def _unavailable(self, *args, **kwargs):
        raise RuntimeError(f"{module}.{name} is a test stand-in (torchvision is not installed)")

    return type(name, (), {"__init__": _unavailable, "__module__": module})


def module_getattr(module: str):
    """A PEP 562 ``__getattr__`` answering every public name with a cached placeholder."""
    cache: dict[str, type] = {}

    def __getattr__(name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in cache:
            cache[name] = placeholder(module, name)
        return cache[name]

    return __getattr__

"""Encoder registry: ``@register_encoder`` factories, ``create(name)``, ``available()``.

Names are exact (``sscd``) or prefixes that take a model argument (``timm:convnext_tiny``).
Built-in encoders are imported on first use, so importing :mod:`encoders` stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from encoders.base import Encoder
from encoders.errors import UnknownEncoderError

__all__ = ["available", "create", "register_encoder"]

Factory = Callable[..., Encoder]
F = TypeVar("F", bound=Factory)

_FACTORIES: dict[str, Factory] = {}
_PREFIX_FACTORIES: dict[str, Factory] = {}
_BUILTIN_MODULES = (
    "encoders.models.sscd",
    "encoders.models.efficientnet",
    "encoders.models.phash",
    "encoders.models.hub",
    "encoders.models.tiny",
)
_builtins_loaded = False


def register_encoder(name: str, *, prefix: bool = False) -> Callable[[F], F]:
    """Register a factory under ``name``; with ``prefix=True`` it handles ``name:<arg>``.

    A prefix factory is called as ``factory(arg, **kwargs)``. Registering a name twice is an error.
    """

    def decorator(factory: F) -> F:
        table = _PREFIX_FACTORIES if prefix else _FACTORIES
        if name in table:
            raise ValueError(f"encoder {name!r} is already registered")
        table[name] = factory
        return factory

    return decorator


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available() -> list[str]:
    """Registered names; prefix families are listed as ``prefix:<model>``."""
    _load_builtins()
    return sorted(_FACTORIES) + sorted(f"{p}:<model>" for p in _PREFIX_FACTORIES)


def create(name: str, **kwargs: Any) -> Encoder:
    """Build the encoder registered as ``name`` (e.g. ``sscd-mini``, ``timm:resnet50``).

    Keyword arguments go to the factory: commonly ``device`` (``auto``, ``cpu``, ``cuda``...),
    ``dtype``, ``input_size``, ``backend``.
    """
    _load_builtins()
    if name in _FACTORIES:
        return _FACTORIES[name](**kwargs)
    prefix, sep, arg = name.partition(":")
    if sep and prefix in _PREFIX_FACTORIES:
        if not arg:
            raise UnknownEncoderError(
                f"encoder {name!r} needs a model after '{prefix}:', e.g. '{prefix}:resnet50'"
            )
        return _PREFIX_FACTORIES[prefix](arg, **kwargs)
    raise UnknownEncoderError(f"unknown encoder {name!r}; available: {', '.join(available())}")

"""The describer registry: a describer's name -> the class that builds it.

A backend's heavy dependencies (torch models, transformers) load only when it is made, so the registry
names each class by module; the modules that define describers never import the registry. A describer's
options are its class's keyword arguments (``describer_options``): the CLI passes it only those.

To add a describer: a ``Describer`` subclass (``describer_id`` starting with its registered name and a
colon, ``describe(requests)``) in a module of ``dmesr/enrich/``, and one line here; tests import every
registered class (tests/test_enrich_registry.py).
"""

from __future__ import annotations

import inspect
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI reads the names for its help without loading any describer
    from dmesr.enrich.describers import Describer

DESCRIBERS = {  # name -> (module, class); the class's keyword arguments are the describer's options
    "cascade": ("dmesr.enrich.cascade", "CascadeDescriber"),
    "gemma3": ("dmesr.enrich.gemma", "Gemma3Describer"),
    "hf": ("dmesr.enrich.describers", "HFDescriber"),
    "precomputed": ("dmesr.enrich.describers", "PrecomputedDescriber"),
}


def describer_class(name: str) -> type[Describer]:
    """The class registered as ``name`` (its module imported now)."""
    if name not in DESCRIBERS:
        raise ValueError(f"unknown describer {name!r}; known: {', '.join(DESCRIBERS)}")
    module, cls = DESCRIBERS[name]
    return getattr(import_module(module), cls)


def describer_options(name: str) -> dict[str, inspect.Parameter]:
    """The options the describer ``name`` declares: its class's arguments, by name."""
    parameters = inspect.signature(describer_class(name)).parameters
    return {key: parameter for key, parameter in parameters.items()
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)}


def make_describer(name: str, **options) -> Describer:
    """The describer ``name`` (``DESCRIBERS``) built with ``options``; an option it does not declare, or a
    required one missing, is one line naming them."""
    declared = describer_options(name)
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise ValueError(f"the {name} describer takes no option {', '.join(unknown)}; it takes: "
                         f"{', '.join(declared) or 'none'}")
    missing = [key for key, parameter in declared.items() if parameter.default is parameter.empty and key not in options]
    if missing:
        raise ValueError(f"the {name} describer needs {', '.join(f'{key}=...' for key in missing)}")
    return describer_class(name)(**options)


def describer_name(describer_id: str) -> str:
    """The registered name a description's describer id starts with (``cascade:efficientnet...`` -> ``cascade``)."""
    return str(describer_id).split(":", 1)[0]

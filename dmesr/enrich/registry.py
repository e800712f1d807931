"""The describer registry: a describer's name -> the class that builds it.

A backend's heavy dependencies (torch models, transformers) load only when it is made, so the registry
names each class by module; the modules that define describers never import the registry.
"""

from __future__ import annotations

from importlib import import_module

from dmesr.enrich.describers import Describer

DESCRIBERS = {  # name -> (module, class); the class's keyword arguments are the describer's options
    "cascade": ("dmesr.enrich.cascade", "CascadeDescriber"),
    "gemma3": ("dmesr.enrich.gemma", "Gemma3Describer"),
    "hf": ("dmesr.enrich.describers", "HFDescriber"),
    "precomputed": ("dmesr.enrich.describers", "PrecomputedDescriber"),
}


def make_describer(name: str, **options) -> Describer:
    """The describer ``name`` (``DESCRIBERS``) built with ``options``."""
    if name not in DESCRIBERS:
        raise ValueError(f"unknown describer {name!r}; known: {', '.join(DESCRIBERS)}")
    module, cls = DESCRIBERS[name]
    if name == "precomputed" and "path" not in options:
        raise ValueError("the precomputed describer needs path=<JSONL or parquet file>")
    return getattr(import_module(module), cls)(**options)

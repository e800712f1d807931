"""Enrichment stage: MLLM descriptions per item and view (stage 1), frozen text encoding (stage 2).

    from dmesr.enrich import describe_items, embed_items, load_features
    describe_items(raw.items, "ml-100k", "cascade", views=["image", "text"])   # cached, resumable
    features = embed_items(raw.items, "ml-100k")                               # SemanticFeatures

The heavy modules (transformers) load on first use, so ``dmesr.enrich.features`` stays cheap to
import for the model code that only needs the dataclass.
"""

from importlib import import_module

_EXPORTS = {
    "describe_items": "dmesr.enrich.pipeline",
    "embed_items": "dmesr.enrich.pipeline",
    "default_enrich_dir": "dmesr.enrich.pipeline",
    "make_describer": "dmesr.enrich.registry",
    "read_descriptions": "dmesr.enrich.cache",
    "export_descriptions": "dmesr.enrich.cache",
    "TextEncoder": "dmesr.enrich.encoders",
    "save_features": "dmesr.enrich.feature_files",
    "load_features": "dmesr.enrich.feature_files",
    "SemanticFeatures": "dmesr.enrich.features",
    "prompt_hash": "dmesr.enrich.prompts",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dmesr.enrich' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)

"""Sequential backbones behind one interface, and the item representations they read vectors from.

``build_model`` is the single place a backbone is chosen by name (the registry ``dmesr.config.BACKBONES``)::

    items = IDEmbedding(num_items, config.model.hidden_size)
    model = build_model(config.model, items, max_len=config.data.max_len)
"""

from importlib import import_module

from dmesr.config import BACKBONES, ModelConfig
from dmesr.models.base import IDEmbedding, ItemRepresentation, SequentialRecommender
from dmesr.models.baselines import BASELINES, Popularity, RepeatPopularity


def backbone_class(name: str) -> type[SequentialRecommender]:
    """The class registered as backbone ``name`` (``dmesr.config.BACKBONES``)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown model {name!r}; known: {', '.join([*BACKBONES, *BASELINES])}")
    module, cls = BACKBONES[name]
    return getattr(import_module(module), cls)


def build_model(config: ModelConfig, items: ItemRepresentation, max_len: int) -> SequentialRecommender:
    """The backbone named by ``config.name``, reading its item vectors from ``items``."""
    backbone = backbone_class(config.name)
    if items.dim != config.hidden_size:
        raise ValueError(f"item vectors are {items.dim} wide but model hidden_size is {config.hidden_size}")
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    return backbone(config, items, max_len)


__all__ = [
    "BASELINES", "Popularity", "RepeatPopularity",
    "IDEmbedding", "ItemRepresentation", "SequentialRecommender", "backbone_class", "build_model",
]

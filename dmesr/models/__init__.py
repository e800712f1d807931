"""Sequential backbones behind one interface, and the item representations they read vectors from.

``build_model`` is the single place a backbone is chosen by name::

    items = IDEmbedding(num_items, config.model.hidden_size)
    model = build_model(config.model, items, max_len=config.data.max_len)
"""

from dmesr.config import ModelConfig
from dmesr.models.base import IDEmbedding, ItemRepresentation, SequentialRecommender
from dmesr.models.baselines import BASELINES, Popularity, RepeatPopularity
from dmesr.models.bert4rec import BERT4Rec
from dmesr.models.gru4rec import GRU4Rec
from dmesr.models.sasrec import SASRec

MODELS: dict[str, type[SequentialRecommender]] = {"sasrec": SASRec, "bert4rec": BERT4Rec, "gru4rec": GRU4Rec}


def build_model(config: ModelConfig, items: ItemRepresentation, max_len: int) -> SequentialRecommender:
    """The backbone named by ``config.name``, reading its item vectors from ``items``."""
    if config.name not in MODELS:
        raise ValueError(f"unknown model {config.name!r}; known: {', '.join([*MODELS, *BASELINES])}")
    if items.dim != config.hidden_size:
        raise ValueError(f"item vectors are {items.dim} wide but model hidden_size is {config.hidden_size}")
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    return MODELS[config.name](config, items, max_len)


__all__ = [
    "BASELINES", "Popularity", "RepeatPopularity",
    "BERT4Rec", "GRU4Rec", "IDEmbedding", "ItemRepresentation", "MODELS", "SASRec", "SequentialRecommender",
    "build_model",
]

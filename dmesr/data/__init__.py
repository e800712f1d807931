"""Data stage: known datasets (fetch + checksum), loaders, leave-one-out splits, model inputs.

    split = prepare_split(DataConfig(dataset="ml-1m"))   # fetched, built and cached once
    windows = TrainWindows(split, max_len=200)
    valid = evaluation_inputs(split, "valid", max_len=200)
"""

from dmesr.data.amazon import load_amazon
from dmesr.data.batches import TrainWindows, evaluation_inputs
from dmesr.data.loaders import load_recbole_atomic
from dmesr.data.preprocess import build_split, dataset_stats, load_split, prepare_split, save_split
from dmesr.data.registry import fetch, known_datasets, load_raw
from dmesr.data.schema import RawDataset, SequenceSplit
from dmesr.data.tables import load_table

__all__ = [
    "known_datasets",
    "fetch",
    "load_raw",
    "load_recbole_atomic",
    "load_amazon",
    "load_table",
    "prepare_split",
    "build_split",
    "load_split",
    "save_split",
    "dataset_stats",
    "RawDataset",
    "SequenceSplit",
    "TrainWindows",
    "evaluation_inputs",
]

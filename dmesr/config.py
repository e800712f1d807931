"""Configuration: one dataclass per component, YAML files, command-line overrides.

Precedence is command line > YAML > dataclass defaults. A resolved ``RunConfig`` is saved as
``config.yaml`` in every run directory, so a run can be repeated exactly.

YAML layout mirrors the dataclasses::

    data: {dataset: ml-1m, max_len: 200}
    model: {name: sasrec, hidden_size: 64}
    train: {lr: 0.001}

Overrides use dotted keys: ``train.lr=0.0005``, ``model.name=gru4rec``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_VERSION = 1  # bump when a saved run can no longer be read by this code


@dataclass
class DataConfig:
    dataset: str = "ml-100k"
    min_user_interactions: int = 5  # iterative k-core on users
    min_item_interactions: int = 5  # iterative k-core on items
    max_len: int = 50  # longest history a model sees
    num_sampled_negatives: int = 100  # sampled protocol: negatives per user, drawn once
    negative_seed: int = 0


@dataclass
class ModelConfig:
    name: str = "sasrec"  # sasrec | bert4rec | gru4rec
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.2
    mask_prob: float = 0.2  # BERT4Rec cloze masking probability


@dataclass
class ItemEncoderConfig:
    """How items are represented. ``id`` is the plain backbone; the rest use cached semantics."""

    kind: str = "id"  # id | text | mllm | concat | llmesr | dmesr
    views: tuple[str, ...] = ("image", "text")  # MLLM views to use (missing ones are skipped)
    use_original_text: bool = True
    fusion: str = "cross_attention"  # cross_attention | none
    # pre | post: where the fusion block's LayerNorms sit (dmesr.models.fusion). "pre": better on
    # validation NDCG@10 of ml-100k in every paired seed of the three backbones (CHANGELOG.md)
    fusion_norm: str = "pre"
    integration: str = "sum"  # sum | concat | gate | dual
    align_weight: float = 0.1  # lambda in L = L_rec + lambda * L_align
    temperature: float = 0.07
    learnable_temperature: bool = False
    adapter_hidden: int = 256
    # Original-text token states are reduced once by a frozen PCA to this width, then a trainable
    # linear map adapts them (the adapter over every token of every item dominates a CPU step
    # otherwise); 0 = the full-width MLP adapter.
    token_pca_dim: int = 64
    freeze_adapters: bool = False
    dropout: float = 0.1
    describer: str = "cascade"
    encoder: str = "all-MiniLM-L6-v2"

    @property
    def fuses_original_text(self) -> bool:
        """Whether the cross-attention fusion runs (the fusion settings matter only then)."""
        return self.kind == "dmesr" and self.use_original_text and self.fusion == "cross_attention"


@dataclass
class TrainConfig:
    loss: str = "ce"  # ce (full softmax) | bce (sampled negatives) | sampled_softmax
    num_negatives: int = 256  # for bce / sampled_softmax
    batch_size: int = 128
    all_windows: bool = False  # train on every max_len window of long histories, not only the last
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 200
    patience: int = 10  # epochs without validation NDCG@10 improvement before stopping
    max_minutes: float = 0.0  # wall-clock budget for training; 0 = none
    seed: int = 42
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | mps
    num_threads: int = 0  # torch intra-op threads; 0 = torch default


@dataclass
class EvalConfig:
    protocol: str = "full"  # full | sampled
    ks: tuple[int, ...] = (5, 10, 20)
    exclude_history: bool = True  # items anywhere in the user's full history are not ranked (the target always is)
    head_fraction: float = 0.2  # most popular training items that count as "head"
    batch_size: int = 1024


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    items: ItemEncoderConfig = field(default_factory=ItemEncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs"
    version: int = CONFIG_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists) that YAML and JSON can hold."""
        return dataclasses.asdict(self, dict_factory=lambda pairs: {k: _plain(v) for k, v in pairs})


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Convert a YAML / command-line value to the type of the default it replaces."""
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"config key {key!r} expects true/false, got {value!r}")
    if isinstance(current, tuple):
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v]
        element_type = type(current[0]) if current else str
        return tuple(_coerce(v, element_type(), key) if element_type is not str else str(v) for v in items)
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        try:
            return type(current)(value)
        except (TypeError, ValueError):
            raise ValueError(f"config key {key!r} expects a number, got {value!r}") from None
    return value if value is None else str(value) if isinstance(current, str) else value


def _apply(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ValueError(f"unknown config key {dotted!r}; known: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"config section {dotted!r} must be a mapping, got {value!r}")
            _apply(current, value, prefix=f"{dotted}.")
        else:
            setattr(obj, key, _coerce(value, current, dotted))


def parse_pairs(pairs: list[str], what: str = "override", form: str = "section.key=value") -> dict[str, Any]:
    """``["train.lr=0.01", "SEEDS=[1, 2]"]`` -> ``{"train.lr": 0.01, "SEEDS": [1, 2]}`` (values read as YAML)."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"{what} must look like {form}, got {pair!r}")
        parsed[key.strip()] = yaml.safe_load(value) if value else ""
    return parsed


def nested_overrides(overrides: dict[str, Any] | None, where: str = "overrides") -> dict[str, Any]:
    """``{"items.kind": "id", "train": {"lr": 0.1}}`` -> ``{"items": {"kind": "id"}, "train": {"lr": 0.1}}``:
    dotted keys split into sections, sections given twice merged; ``where`` names the source in errors."""
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise ValueError(f"{where} must be a mapping of config keys to values, got {overrides!r}")
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, leaf = str(key).split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{where}: key {key!r} clashes with a value given for {part!r}")
        if isinstance(value, dict):
            section = node.setdefault(leaf, {})
            if not isinstance(section, dict):
                raise ValueError(f"{where}: key {key!r} is given both a value and a section")
            merge_overrides(section, nested_overrides(value, where))
        else:
            node[leaf] = value
    return nested


def merge_overrides(into: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """``updates`` merged into the nested ``into`` (sections key by key, values replaced); returns ``into``."""
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge_overrides(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["train.lr=0.01", "model.name=gru4rec"]`` -> nested dict."""
    return nested_overrides(parse_pairs(pairs))


def load_config(yaml_path: str | Path | None = None, overrides: list[str] | dict | None = None) -> RunConfig:
    """Defaults, then the YAML file, then overrides (dotted strings or a nested dict)."""
    config = RunConfig()
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping at the top level")
        _apply(config, loaded)
    if overrides:
        _apply(config, parse_overrides(overrides) if isinstance(overrides, list) else overrides)
    return config


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a saved config; refuses runs written by an incompatible version."""
    version = data.get("version")
    if version != CONFIG_VERSION:
        raise ValueError(
            f"run was written with config version {version!r}; this dmesr reads version {CONFIG_VERSION}"
        )
    config = RunConfig()
    _apply(config, data)
    return config


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def saved_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run directory was trained with (its ``config.yaml``)."""
    return config_from_dict(yaml.safe_load((Path(run_dir) / "config.yaml").read_text()))

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
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import yaml

# 2: a saved config holds every setting (version 1 configs lack the settings added after them; they are read
# through migrate_config) and the run identity hashes only the settings in effect (config_hash)
CONFIG_VERSION = 2

# The names each setting accepts. They live here, beside the settings, and the modules that implement
# them import these lists, so checking a config needs no model code.
# model.name: the trained sequential models, each named by the class that implements it (module, class;
# imported only when a model is built, by dmesr.models.build_model). To add a backbone: its module in
# dmesr/models/ (a SequentialRecommender taking (ModelConfig, ItemRepresentation, max_len)) and one line here;
# the CLI help, config checks and the backbone tests read this registry.
BACKBONES = {"sasrec": ("dmesr.models.sasrec", "SASRec"), "bert4rec": ("dmesr.models.bert4rec", "BERT4Rec"),
             "gru4rec": ("dmesr.models.gru4rec", "GRU4Rec")}
TRIVIAL_BASELINES = ("pop", "repeat-pop")  # model.name: nothing to train (dmesr.models.baselines)
# items.kind: the item encoders, each named by the function that builds it (module, function; imported only when
# a model is built, by dmesr.models.item_encoders.build_item_representation). To add one: an ItemRepresentation
# and its builder, and one line here.
ITEM_KINDS = {kind: ("dmesr.models.item_encoders", f"{kind}_items")
              for kind in ("id", "text", "mllm", "concat", "llmesr", "dmesr")}
INTEGRATIONS = ("sum", "concat", "gate", "dual")  # items.integration
FUSIONS = ("cross_attention", "none")  # items.fusion
FUSION_NORMS = ("post", "pre")  # items.fusion_norm (dmesr.models.fusion)


class LossSpec(NamedTuple):
    """A next-item loss (L_rec): the function computing it, called by ``dmesr.models.losses.loss_terms`` as
    ``function(hidden, table, targets)``, plus ``train.num_negatives`` when it samples negatives."""

    module: str
    function: str
    samples_negatives: bool
    about: str  # one line for the CLI help


# train.loss: the next-item losses. To add one: its function and one line here; the config checks, the run
# identity (train.num_negatives counts only for a loss that samples), `dmesr train --help` and the loss tests
# read this registry.
LOSSES = {
    "ce": LossSpec("dmesr.models.losses", "full_cross_entropy", False, "full softmax over every item"),
    "bce": LossSpec("dmesr.models.losses", "bce_sampled", True,
                    "binary cross-entropy of the positive and train.num_negatives uniform negatives"),
    "sampled_softmax": LossSpec("dmesr.models.losses", "sampled_softmax", True,
                                "softmax over the positive and train.num_negatives uniform negatives"),
}

PROTOCOLS = ("full", "sampled")  # eval.protocol (dmesr.evaluation.protocols)
CONTROLS = ("none", "shuffled", "random", "text-only")  # items.control (dmesr.models.controls)
ACTIVATIONS = ("relu", "gelu")  # model.activation (dmesr.models.sasrec)
NORM_LAYOUTS = ("pre", "post")  # model.norm_layout (dmesr.models.sasrec)
INITS = ("default", "normal")  # model.init (dmesr.models.sasrec)
POSITIONS = ("newest", "oldest")  # model.positions (dmesr.models.sasrec)
REPEAT_HISTORIES = ("all", "window")  # model.repeat_history (dmesr.models.baselines)


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
    name: str = "sasrec"  # a backbone of BACKBONES, or a baseline of TRIVIAL_BASELINES (nothing to train)
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.2
    mask_prob: float = 0.2  # BERT4Rec cloze masking probability
    inner_size: int = 0  # SASRec feed-forward width; 0 = hidden_size (the SASRec paper's)
    activation: str = "relu"  # SASRec feed-forward activation: relu (the SASRec paper's) | gelu
    # dropout after the feed-forward's activation too (the SASRec paper's code); RecBole drops out only after
    # the feed-forward's second layer
    inner_dropout: bool = True
    # SASRec's LayerNorms: "pre" (before each sub-layer, one after the last block) | "post" (the original
    # Transformer's and RecBole's: after each residual sum, one on the embeddings, none at the end)
    norm_layout: str = "pre"
    scale_embeddings: bool = True  # SASRec multiplies item vectors by sqrt(hidden_size) before adding positions
    init: str = "default"  # SASRec's linear layers: PyTorch's default | "normal" N(0, 0.02), zero bias (RecBole's)
    # SASRec's positional vectors count from the newest item (the latest always has the same one) | "oldest"
    positions: str = "newest"
    # a learned score for the items of the user's own history (how often, how recently), added to the
    # backbone's score through a gate per user and step (dmesr.models.repeats); for repeat consumption
    repeat_head: bool = False
    # the repeat head also reads the history before the max_len window: counts and recency over the whole
    # history, and up to this many distinct earlier items (the most often consumed) as candidates; 0: the
    # window only
    repeat_context: int = 256
    # repeat-pop counts the user's whole history ("all", the strongest form) or only the max_len items a
    # model sees ("window")
    repeat_history: str = "all"


@dataclass
class ItemEncoderConfig:
    """How items are represented. ``id`` is the plain backbone; the rest use cached semantics."""

    kind: str = "id"  # id | text | mllm | concat | llmesr | dmesr
    views: tuple[str, ...] = ("image", "text")  # MLLM views to use (missing ones are skipped)
    use_original_text: bool = True
    fusion: str = "cross_attention"  # cross_attention | none
    # pre | post: where the fusion block's LayerNorms sit (dmesr.models.fusion); the evidence for "pre":
    # reports/dmesr-notes.md, "Fusion block: pre-norm"
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
    # Keep every adapter at its random initialisation (each one's first stage is then computed once, not
    # every step). The alignment then trains nothing: both vectors it compares come out of frozen adapters.
    freeze_adapters: bool = False
    dropout: float = 0.1
    describer: str = "cascade"
    encoder: str = "all-MiniLM-L6-v2"
    # none | shuffled | random | text-only: break the semantic inputs on purpose, to test whether the
    # gain comes from what they say (dmesr.models.controls)
    control: str = "none"

    @property
    def fuses_original_text(self) -> bool:
        """Whether the cross-attention fusion runs (the fusion settings matter only then)."""
        return self.kind == "dmesr" and self.use_original_text and self.fusion == "cross_attention"


@dataclass
class TrainConfig:
    loss: str = "ce"  # the next-item loss, a name in LOSSES: ce (full softmax) | bce | sampled_softmax
    num_negatives: int = 256  # for bce / sampled_softmax
    batch_size: int = 128
    # false: one window per user, the last max_len + 1 items of the train part (the common practice;
    # a run logs the share of training interactions this covers); true: windows over the whole train
    # part, so long histories are trained on in full (more steps per epoch)
    all_windows: bool = False
    # > 0: windows end every N items of the train part and each trains only its last N targets, so every
    # target is trained once, with at least max_len - N + 1 items of context; 1 = every prefix with the loss
    # at its last position (RecBole's sequential training). 0 = off (the windows of all_windows)
    window_stride: int = 0
    lr: float = 1e-3
    # the repeat head's own few hundred weights learn at this rate (0: train.lr): with one window per user an
    # epoch is a handful of steps, too few at train.lr for them to move before the backbone stops improving
    repeat_head_lr: float = 0.03
    weight_decay: float = 0.0
    max_epochs: int = 200
    patience: int = 10  # epochs without validation NDCG@10 improvement before stopping
    max_minutes: float = 0.0  # wall-clock budget for training; 0 = none
    seed: int = 42
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | mps
    num_threads: int = 0  # torch intra-op threads; 0 = torch default
    compile: bool = False  # torch.compile the training loss (same values; for GPUs: a CPU step gets slower)


@dataclass
class EvalConfig:
    protocol: str = "full"  # full | sampled
    ks: tuple[int, ...] = (5, 10, 20)
    # true: items anywhere in the user's full history are not ranked (the target always is); false:
    # every item is ranked; auto: true on data without repeat consumption (MovieLens), false on data
    # with it, where excluding seen items would leave a repeated target as the only seen candidate
    exclude_history: bool | str = "auto"
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


# Settings that take true, false or "auto" (chosen from the data when a run starts).
AUTO_OR_BOOL = {"eval.exclude_history"}


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Convert a YAML / command-line value to the type of the default it replaces."""
    if key in AUTO_OR_BOOL:
        return "auto" if str(value).strip().lower() == "auto" else _coerce(value, True, key + " (or auto)")
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
    if isinstance(current, int) and not isinstance(current, bool):
        # int(1.7) would quietly train seed 1: only whole numbers are integers
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else _number(value)
        if not isinstance(number, (int, float)) or isinstance(number, bool) or not float(number).is_integer():
            raise ValueError(f"config key {key!r} expects an integer, got {value!r}")
        return int(number)
    if isinstance(current, float):
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else _number(value)
        if number is None or isinstance(number, bool) or number != number:
            raise ValueError(f"config key {key!r} expects a number, got {value!r}")
        return float(number)
    return value if value is None else str(value) if isinstance(current, str) else value


def _number(value: Any) -> float | None:
    try:
        return float(str(value).strip())
    except ValueError:
        return None


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


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content; a syntax error is one line naming the file, line and problem."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ValueError(f"{path}{line}: not valid YAML ({problem})") from None
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
        loaded = read_yaml(path) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping at the top level")
        _apply(config, loaded)
    if overrides:
        _apply(config, parse_overrides(overrides) if isinstance(overrides, list) else overrides)
    check_config(config)
    return config


def check_config(config: RunConfig) -> None:
    """Refuse settings that would train nonsense or fail deep inside torch: one line naming the key."""
    from dmesr.data.identity import dataset_name  # here: the data layer imports this module

    dataset_name(config.data.dataset)
    data, model, items, train, eval_ = config.data, config.model, config.items, config.train, config.eval
    choices = {"model.name": (model.name, (*BACKBONES, *TRIVIAL_BASELINES)), "items.kind": (items.kind, ITEM_KINDS),
               "items.control": (items.control, CONTROLS), "model.activation": (model.activation, ACTIVATIONS),
               "model.norm_layout": (model.norm_layout, NORM_LAYOUTS), "model.init": (model.init, INITS),
               "model.positions": (model.positions, POSITIONS),
               "items.fusion": (items.fusion, FUSIONS), "items.fusion_norm": (items.fusion_norm, FUSION_NORMS),
               "items.integration": (items.integration, INTEGRATIONS), "train.loss": (train.loss, LOSSES),
               "eval.protocol": (eval_.protocol, PROTOCOLS),
               "model.repeat_history": (model.repeat_history, REPEAT_HISTORIES)}
    for key, (value, known) in choices.items():
        if value not in known:
            raise ValueError(f"unknown {key} {value!r}; known: {', '.join(known)}")
    for view in items.views:
        if view not in ("image", "text"):
            raise ValueError(f"unknown view {view!r} in items.views; known: image, text")
    if train.device not in ("auto", "cpu", "mps") and not train.device.startswith("cuda"):
        raise ValueError(f"unknown train.device {train.device!r}; known: auto, cpu, cuda, cuda:N, mps")
    at_least = {"data.min_user_interactions": (data.min_user_interactions, 0),
                "data.min_item_interactions": (data.min_item_interactions, 0), "data.max_len": (data.max_len, 1),
                "data.num_sampled_negatives": (data.num_sampled_negatives, 0),
                "model.hidden_size": (model.hidden_size, 1), "model.num_layers": (model.num_layers, 1),
                "model.num_heads": (model.num_heads, 1), "model.inner_size": (model.inner_size, 0),
                "model.repeat_context": (model.repeat_context, 0),
                "items.adapter_hidden": (items.adapter_hidden, 1),
                "items.token_pca_dim": (items.token_pca_dim, 0), "items.align_weight": (items.align_weight, 0),
                "train.num_negatives": (train.num_negatives, 1),
                "train.window_stride": (train.window_stride, 0), "train.batch_size": (train.batch_size, 1),
                "train.weight_decay": (train.weight_decay, 0), "train.max_epochs": (train.max_epochs, 1),
                "train.patience": (train.patience, 1), "train.max_minutes": (train.max_minutes, 0),
                "train.num_threads": (train.num_threads, 0), "eval.batch_size": (eval_.batch_size, 1)}
    for key, (value, lowest) in at_least.items():
        if value < lowest:
            raise ValueError(f"{key} must be >= {lowest}, got {value}")
    # 0 is allowed: a model that does not learn is a baseline (and a repeat head at 0 learns at train.lr)
    at_least_zero = {"train.lr": train.lr, "train.repeat_head_lr": train.repeat_head_lr}
    above_zero = {"items.temperature": items.temperature}
    fractions = {"model.dropout": model.dropout, "model.mask_prob": model.mask_prob, "items.dropout": items.dropout,
                 "eval.head_fraction": eval_.head_fraction}
    for key, value in at_least_zero.items():
        if not value >= 0:
            raise ValueError(f"{key} must be >= 0, got {value}")
    for key, value in above_zero.items():
        if not value > 0:
            raise ValueError(f"{key} must be > 0, got {value}")
    for key, value in fractions.items():
        if not 0 <= value < 1:
            raise ValueError(f"{key} must be in [0, 1), got {value}")
    if train.window_stride > data.max_len:
        raise ValueError(f"train.window_stride must be <= data.max_len ({data.max_len}), got {train.window_stride}")
    if train.window_stride and model.name == "bert4rec":
        raise ValueError("train.window_stride trains next-item targets; bert4rec's cloze targets take 0")
    if model.repeat_head and model.name in BACKBONES and train.loss != "ce":
        raise ValueError(f"model.repeat_head needs train.loss=ce (the full softmax), got {train.loss!r}")
    if not eval_.ks or min(eval_.ks) < 1:
        raise ValueError(f"eval.ks must list cut-offs >= 1, got {list(eval_.ks)}")


# How to add a setting: give it a field with its default in the dataclasses above; list it in ADDED_SETTINGS
# with the value that reproduces the code before it existed (often its default); and, if it acts only on some
# runs, say on which in IN_EFFECT. Saved configs without it then read as what they trained, and no existing
# run's identity changes (tests/test_config.py pins some).

# Settings added after runs had been saved, each with the value that gives the behaviour from before it
# existed. A saved config that lacks one reads it as that value, and a run's identity leaves it out at
# that value, so adding a setting neither misreads a stored run nor renames one.
ADDED_SETTINGS: dict[str, Any] = {
    "items.token_pca_dim": 0,  # 2026-11-26; before: the full-width MLP adapter over the token states
    "items.fusion_norm": "post",  # 2026-11-27; before: the post-norm fusion block (the default became pre)
    "items.control": "none",  # 2026-12-04; before: no control
    "train.compile": False,  # 2026-12-04; before: eager steps
    "model.inner_size": 0,  # 2026-12-07; before: SASRec's feed-forward as wide as its hidden size
    "model.activation": "relu",  # 2026-12-07; before: SASRec's feed-forward with ReLU
    "model.inner_dropout": True,  # 2026-12-07; before: dropout after the feed-forward's activation as well
    # 2026-12-07; before: SASRec's pre-LayerNorm blocks, sqrt(d)-scaled items, default init, positions from newest
    "model.norm_layout": "pre", "model.scale_embeddings": True, "model.init": "default", "model.positions": "newest",
    "train.window_stride": 0,  # 2026-12-07; before: windows by train.all_windows alone
    "model.repeat_head": False,  # 2026-12-07; before: the backbone's score alone
    "model.repeat_history": "window",  # 2026-12-07; before: repeat-pop counted the max_len window only
    "model.repeat_context": 0,  # 2026-12-07; before: the repeat head read the max_len window only
    "train.repeat_head_lr": 0.0,  # 2026-12-07; before: the repeat head learnt at train.lr
}


def _trained(config: RunConfig) -> bool:
    return config.model.name not in TRIVIAL_BASELINES


def _semantic(config: RunConfig) -> bool:
    return config.items.kind != "id"


def _dmesr(config: RunConfig) -> bool:
    return config.items.kind == "dmesr"


def _fuses(config: RunConfig) -> bool:
    return config.items.fuses_original_text


# When a setting acts on a run; a setting not named here acts on every run. A run's identity hashes
# only the settings in effect, so an ID-only run is the same run whatever the fusion settings say.
IN_EFFECT: dict[str, Callable[[RunConfig], bool]] = {
    **dict.fromkeys(("model.hidden_size", "model.num_layers", "model.dropout"), _trained),
    "model.num_heads": lambda config: config.model.name in ("sasrec", "bert4rec"),
    "model.mask_prob": lambda config: config.model.name == "bert4rec",
    **dict.fromkeys(("model.inner_size", "model.activation", "model.inner_dropout", "model.norm_layout",
                     "model.scale_embeddings", "model.init", "model.positions"), lambda config: config.model.name == "sasrec"),
    "model.repeat_head": _trained,
    **dict.fromkeys(("model.repeat_context", "train.repeat_head_lr"),
                    lambda config: _trained(config) and config.model.repeat_head),
    "model.repeat_history": lambda config: config.model.name == "repeat-pop",
    **dict.fromkeys(("train.loss", "train.batch_size", "train.all_windows", "train.lr", "train.weight_decay",
                     "train.max_epochs", "train.patience", "train.max_minutes", "train.deterministic",
                     "train.window_stride"), _trained),
    "train.num_negatives": lambda config: _trained(config) and (config.train.loss not in LOSSES
                                                                or LOSSES[config.train.loss].samples_negatives),
    **dict.fromkeys(("items.views", "items.use_original_text", "items.adapter_hidden", "items.freeze_adapters",
                     "items.dropout", "items.describer", "items.encoder", "items.control"), _semantic),
    **dict.fromkeys(("items.fusion", "items.integration", "items.align_weight", "items.temperature",
                     "items.learnable_temperature"), _dmesr),
    **dict.fromkeys(("items.fusion_norm", "items.token_pca_dim"), _fuses),
}
# Settings that change where or how fast a run is computed, not what: never part of its identity
# (the seed is in the run directory's name instead).
NOT_HASHED = {"output_dir", "version", "train.seed", "train.device", "train.num_threads", "train.compile"}


def settings(config: RunConfig) -> dict[str, Any]:
    """Every setting of ``config`` by dotted name (``train.lr``), values as YAML holds them."""
    flat = {}
    for key, value in config.to_dict().items():
        flat.update({f"{key}.{name}": inner for name, inner in value.items()} if isinstance(value, dict)
                    else {key: value})
    return flat


def identity_settings(config: RunConfig) -> dict[str, Any]:
    """The settings that make a run what it is: those in effect, less the ones at the value from before
    they existed (``ADDED_SETTINGS``) and the ones that only say where or how fast (``NOT_HASHED``)."""
    chosen = {}
    for key, value in settings(config).items():
        if key in NOT_HASHED or not IN_EFFECT.get(key, lambda _: True)(config):
            continue
        if key in ADDED_SETTINGS and value == _plain(ADDED_SETTINGS[key]):
            continue
        # "auto" replaced the default true: hashed as true, so that runs on data without repeats kept their
        # identity; on data with repeats the resolved choice is checked against the run's data.json
        chosen[key] = True if key == "eval.exclude_history" and value == "auto" else value
    return chosen


def config_hash(config: RunConfig) -> str:
    """A run's identity: 8 hex digits of the settings in effect (``identity_settings``)."""
    nested: dict[str, Any] = {}
    for key, value in identity_settings(config).items():
        section, _, name = key.rpartition(".")
        (nested.setdefault(section, {}) if section else nested)[name] = value
    return hashlib.sha256(json.dumps(nested, sort_keys=True).encode()).hexdigest()[:8]


def migrate_config(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config (any version this code reads) as a complete one of ``CONFIG_VERSION``: each setting
    it lacks takes its value from before the setting existed (``ADDED_SETTINGS``)."""
    version = data.get("version")
    if not isinstance(version, int) or not 1 <= version <= CONFIG_VERSION:
        raise ValueError(
            f"run was written with config version {version!r}; this dmesr reads versions 1 to {CONFIG_VERSION}"
        )
    migrated = copy.deepcopy(data)
    known = settings(RunConfig())
    for key in known:
        section, _, name = key.rpartition(".")
        node = migrated.setdefault(section, {}) if section else migrated
        if name in node:
            continue
        if key not in ADDED_SETTINGS:
            raise ValueError(f"saved config (version {version}) lacks {key!r}, which no migration supplies")
        node[name] = copy.deepcopy(_plain(ADDED_SETTINGS[key]))
    migrated["version"] = CONFIG_VERSION
    return migrated


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a saved config, migrated to ``CONFIG_VERSION`` (``migrate_config``)."""
    config = RunConfig()
    _apply(config, migrate_config(data))
    return config


def config_yaml(config: RunConfig) -> str:
    """The complete config as YAML, every setting written out (what a run folder and the store keep)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(config_yaml(config))


def saved_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run directory was trained with (its ``config.yaml``)."""
    return config_from_dict(read_yaml(Path(run_dir) / "config.yaml"))

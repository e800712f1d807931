"""Experiment grids: one YAML file expands to every (dataset, backbone, method, seed) run.

An experiment file names the axes of a grid and the config overrides of each method::

    name: ml-100k-full
    base: {data: {max_len: 50}, train: {max_epochs: 200, patience: 10}}   # shared config
    datasets: [ml-100k, ml-latest-small]
    models: [sasrec, bert4rec, gru4rec]
    seeds: [1, 2, 3]
    methods:                                   # name -> overrides (dotted or nested keys)
      backbone: {items.kind: id}
      dmesr: {items.kind: dmesr, items.integration: sum}
    per_dataset: {ml-1m: {data.max_len: 200}}  # optional overrides for one dataset
    per_model: {bert4rec: {train.patience: 20}}  # optional overrides for one backbone
    only: {ml-1m: {methods: [backbone, dmesr]}}  # optional: restrict a dataset's methods / models
    order: [dataset, seed, method, model]      # optional: the cells' run order, outermost first

Cells run in ``order`` (default ``[dataset, model, method, seed]``), each axis in the order its
list gives (a dataset's ``only`` list orders its methods and models). Seeds outermost finish one
seed of every cell before any second seed, so a partly run grid already shows every row; the
order decides nothing else (run directories do not depend on it), but ``--shard`` deals the
cells in this order, so shards are only comparable under one order.

A file may also start from another one, ``extends: main.yaml`` (a path relative to the file): every
key it sets replaces the parent's key whole, every key it leaves out is the parent's. A later stage
of a grid (more methods on one dataset, say) then reuses the parent's ``base`` and method
definitions, and with the parent's ``name`` its runs belong to the same experiment and run store.

A cell's config is built in this order, later winning: dataclass defaults, ``base``,
``per_dataset[dataset]``, ``per_model[model]``, ``methods[method]``, then the cell's own dataset,
model and seed.
Runs go under ``base.output_dir`` when it is set, else ``runs/<name>``; with ``store: FOLDER`` each
finished run is also added to that run store (:mod:`dmesr.experiments.run_store`), in the collection
named after the output folder. The method name is not
part of the config (two names for one config would be the same run), so the runner writes it
into the run directory as ``cell.json`` and the run store reads it from there, with the method
``roles`` the reports read (:mod:`dmesr.experiments.roles`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmesr.config import RunConfig, load_config, merge_overrides, nested_overrides, read_yaml
from dmesr.experiments.roles import roles_from_spec
from dmesr.training.run import run_directory

EXPERIMENT_KEYS = ("name", "description", "base", "datasets", "models", "seeds", "methods", "per_dataset",
                   "per_model", "only", "order", "store", "roles", "tuning")  # tuning: dmesr.experiments.tuning
AXES = ("dataset", "model", "method", "seed")
REQUIRED_KEYS = ("name", "datasets", "models", "seeds", "methods")
ONLY_KEYS = ("methods", "models")
# Config keys that the grid's axes own: a method setting them would contradict the grid.
AXIS_KEYS = {("data", "dataset"): "datasets", ("model", "name"): "models", ("train", "seed"): "seeds"}


@dataclass
class Cell:
    """One run of a grid; ``config`` is fully resolved."""

    experiment: str
    dataset: str
    model: str
    method: str
    seed: int
    config: RunConfig
    store: str = ""  # the run store its finished run is added to ("" = none)
    roles: str = ""  # the experiment's method roles (dmesr.experiments.roles), as JSON

    @property
    def run_dir(self) -> Path:
        return run_directory(self.config)

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.model}/{self.method}/seed{self.seed}"

    def identity(self) -> dict[str, Any]:
        """What ``cell.json`` holds."""
        return {"experiment": self.experiment, "dataset": self.dataset, "model": self.model,
                "method": self.method, "seed": self.seed, "roles": json.loads(self.roles) if self.roles else None}


def _flat_keys(nested: dict[str, Any], prefix: tuple = ()) -> list[tuple]:
    keys = []
    for key, value in nested.items():
        keys += _flat_keys(value, prefix + (key,)) if isinstance(value, dict) else [prefix + (key,)]
    return keys


def _checked_section(overrides: Any, where: str) -> dict[str, Any]:
    """Nested overrides, validated against the config dataclasses so a typo names its section."""
    nested = nested_overrides(overrides, where)
    for key in _flat_keys(nested):
        if key in AXIS_KEYS:
            raise ValueError(f"{where} sets {'.'.join(key)}, which the grid's '{AXIS_KEYS[key]}' list controls")
    try:
        load_config(overrides=copy.deepcopy(nested))
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return nested


def _name_list(spec: dict, key: str, path: Path) -> list:
    values = spec[key]
    if not isinstance(values, list) or not values:
        raise ValueError(f"{path}: '{key}' must be a non-empty list, got {values!r}")
    if len(set(map(str, values))) != len(values):
        raise ValueError(f"{path}: '{key}' lists a name twice: {values!r}")
    return values


def load_grid(path: str | Path) -> list[Cell]:
    """Read an experiment YAML and expand it to its cells, in the file's ``order``."""
    path = Path(path)
    return expand_grid(_read_spec(path), source=path)


def read_experiment(path: str | Path) -> dict[str, Any]:
    """An experiment file's mapping, its ``extends`` chain resolved."""
    return _read_spec(Path(path))


def _read_spec(path: Path, children: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The experiment mapping of ``path`` with its ``extends`` chain resolved (child keys win)."""
    if not path.is_file():
        extended_by = f" (extended by {children[-1]})" if children else ""
        raise FileNotFoundError(f"experiment file not found: {path}{extended_by}")
    spec = read_yaml(path)
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: an experiment file must hold a mapping at the top level")
    if "extends" not in spec:
        return spec
    parent = path.parent / str(spec.pop("extends"))
    if parent.resolve() in {p.resolve() for p in (*children, path)}:
        raise ValueError(f"{path}: 'extends' makes a cycle through {parent}")
    return {**_read_spec(parent, (*children, path)), **spec}


def expand_grid(spec: dict[str, Any], source: str | Path = "experiment") -> list[Cell]:
    """The cells of an experiment mapping (see the module docstring for its keys)."""
    unknown = sorted(set(spec) - set(EXPERIMENT_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown experiment key(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(EXPERIMENT_KEYS)}")
    missing = [key for key in REQUIRED_KEYS if key not in spec]
    if missing:
        raise ValueError(f"{source}: missing experiment key(s) {', '.join(map(repr, missing))}")
    name = str(spec["name"])
    datasets = [str(d) for d in _name_list(spec, "datasets", source)]
    models = [str(m) for m in _name_list(spec, "models", source)]
    seeds = _name_list(spec, "seeds", source)
    if not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in seeds):
        raise ValueError(f"{source}: 'seeds' must be integers, got {seeds!r}")
    methods = spec["methods"]
    if not isinstance(methods, dict) or not methods:
        raise ValueError(f"{source}: 'methods' must be a non-empty mapping of method name -> overrides")

    base = _checked_section(spec.get("base"), f"{source}: base")
    base.setdefault("output_dir", str(Path("runs") / name))
    method_overrides = {str(m): _checked_section(o, f"{source}: method {m!r}") for m, o in methods.items()}
    per_dataset = _per_axis(spec, "per_dataset", datasets, source)
    per_model = _per_axis(spec, "per_model", models, source)
    only = _restrictions(spec, datasets, models, list(method_overrides), source)
    order = _order(spec, source)
    roles = roles_from_spec(spec.get("roles"), list(method_overrides), source).to_json()

    ranked = []  # (position along each axis, in `order`; cell)
    problems = []  # every cell whose config is refused, named by its label
    for dataset_rank, dataset in enumerate(datasets):
        for model_rank, model in enumerate(only.get(dataset, {}).get("models", models)):
            for method_rank, method in enumerate(only.get(dataset, {}).get("methods", list(method_overrides))):
                for seed_rank, seed in enumerate(seeds):
                    overrides = copy.deepcopy(base)
                    for layer in (per_dataset.get(dataset, {}), per_model.get(model, {}), method_overrides[method]):
                        merge_overrides(overrides, layer)
                    merge_overrides(overrides, {"data": {"dataset": dataset}, "model": {"name": model},
                                       "train": {"seed": seed}})
                    positions = {"dataset": dataset_rank, "model": model_rank, "method": method_rank,
                                 "seed": seed_rank}
                    try:
                        config = load_config(overrides=overrides)
                    except ValueError as error:
                        problems.append(f"{dataset}/{model}/{method}/seed{seed}: {error}")
                        continue
                    ranked.append((tuple(positions[axis] for axis in order),
                                   Cell(name, dataset, model, method, seed, config, str(spec.get("store") or ""),
                                        roles)))
    if problems:
        raise ValueError(f"{source}: {len(problems)} cell(s) have a bad config, nothing was started:\n  "
                         + "\n  ".join(problems))
    if not ranked:
        raise ValueError(f"{source}: the grid is empty")
    cells = [cell for _, cell in sorted(ranked, key=lambda pair: pair[0])]
    _check_distinct_runs(cells, source)
    return cells


def _order(spec: dict, source) -> list[str]:
    order = spec.get("order", list(AXES))
    if not isinstance(order, list) or sorted(map(str, order)) != sorted(AXES):
        raise ValueError(f"{source}: 'order' must list each of {', '.join(AXES)} once, got {order!r}")
    return [str(axis) for axis in order]


def _per_axis(spec: dict, key: str, names: list[str], source) -> dict[str, dict]:
    """``per_dataset`` / ``per_model``: overrides per name of that axis, each name one the grid lists."""
    per_name = spec.get(key) or {}
    if not isinstance(per_name, dict):
        raise ValueError(f"{source}: '{key}' must map names to overrides")
    for name in per_name:
        if name not in names:
            raise ValueError(f"{source}: {key} names {name!r}, which the grid does not list ({names})")
    return {n: _checked_section(o, f"{source}: {key} {n!r}") for n, o in per_name.items()}


def _restrictions(spec: dict, datasets: list[str], models: list[str], methods: list[str], source) -> dict:
    only = spec.get("only") or {}
    if not isinstance(only, dict):
        raise ValueError(f"{source}: 'only' must map dataset names to {{methods: [...], models: [...]}}")
    known = {"methods": methods, "models": models}
    for dataset, restriction in only.items():
        if dataset not in datasets:
            raise ValueError(f"{source}: only names {dataset!r}, which is not in datasets {datasets}")
        if not isinstance(restriction, dict) or not restriction or set(restriction) - set(ONLY_KEYS):
            raise ValueError(f"{source}: only[{dataset!r}] must be a mapping with keys from {ONLY_KEYS}, "
                             f"got {restriction!r}")
        for key, names in restriction.items():
            if not isinstance(names, list) or not names:
                raise ValueError(f"{source}: only[{dataset!r}].{key} must be a non-empty list")
            for entry in names:
                if entry not in known[key]:
                    raise ValueError(f"{source}: only[{dataset!r}].{key} names unknown {key[:-1]} {entry!r}; "
                                     f"known: {', '.join(known[key])}")
    return only


def _check_distinct_runs(cells: list[Cell], source) -> None:
    """Two methods that resolve to one config would share (and overwrite) one run directory."""
    owners: dict[Path, Cell] = {}
    for cell in cells:
        other = owners.setdefault(cell.run_dir, cell)
        if other is not cell:
            raise ValueError(f"{source}: methods {other.method!r} and {cell.method!r} give the same run config "
                             f"for {cell.dataset}/{cell.model}/seed{cell.seed}; make their overrides differ")

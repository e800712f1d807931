"""Method roles: what each method of an experiment is in the comparison, declared by its grid file.

    roles:
      backbone: backbone                  # every improvement is measured against it (same model)
      baselines: [text, mllm, concat, llmesr]   # what the proposed method must beat, in table order
      proposed: dmesr
      variants: [dmesr-concat, dmesr-gate]      # settings of the proposed method validation may choose

Methods with no role (ablations) follow in the tables by name. The runner records the roles with each
run (``cell.json``), the run store keeps them (``roles``, as JSON), and the reports read them from the
runs they report. A run trained outside a grid is named by its item-encoder kind (``id`` is
``backbone``), and those names have ``DEFAULT_ROLES``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import pandas as pd

ROLE_KEYS = ("backbone", "baselines", "proposed", "variants")


@dataclass(frozen=True)
class Roles:
    backbone: str = "backbone"
    baselines: tuple[str, ...] = ()
    proposed: str = ""
    variants: tuple[str, ...] = ()

    @property
    def tuning(self) -> tuple[str, ...]:
        """The proposed method and its variants: the one best on validation is the method tuned as a
        practitioner would."""
        return (self.proposed, *self.variants) if self.proposed else ()

    def order(self, methods) -> list[str]:
        """The backbone, the baselines, the proposed method, then the rest by name."""
        fixed = [self.backbone, *self.baselines, *([self.proposed] if self.proposed else [])]
        return sorted(set(methods), key=lambda m: (fixed.index(m) if m in fixed else len(fixed), m))

    def to_json(self) -> str:
        return json.dumps(asdict(self))


DEFAULT_ROLES = Roles("backbone", ("text", "mllm", "concat", "llmesr"), "dmesr", ())


def roles_from_spec(spec, methods: list[str], source) -> Roles:
    """A grid file's ``roles`` mapping, checked against its methods; without one, only the backbone
    (the method named ``backbone``) has a role."""
    if spec is None:
        return Roles()
    if not isinstance(spec, dict) or set(spec) - set(ROLE_KEYS):
        raise ValueError(f"{source}: 'roles' must be a mapping with keys from {', '.join(ROLE_KEYS)}, got {spec!r}")
    roles = Roles(str(spec.get("backbone", "backbone")), tuple(map(str, spec.get("baselines") or ())),
                  str(spec.get("proposed") or ""), tuple(map(str, spec.get("variants") or ())))
    named = [roles.backbone, *roles.baselines, *([roles.proposed] if roles.proposed else []), *roles.variants]
    unknown = [name for name in named if name not in methods]
    if unknown:
        raise ValueError(f"{source}: roles name unknown method(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(methods)}")
    if len(set(named)) != len(named):
        raise ValueError(f"{source}: roles give a method two roles: {named}")
    return roles


def runs_roles(runs: pd.DataFrame) -> Roles:
    """The roles of the experiment the runs belong to (the store's ``roles``); ``DEFAULT_ROLES`` for
    runs outside a grid. Grids of one experiment may declare part of its roles (a grid of trivial
    baselines declares only the backbone): declarations that agree where both speak are merged."""
    declared = [json.loads(text) for text in set(runs.get("roles", pd.Series(dtype=object)).dropna()) if text]
    if not declared:
        return DEFAULT_ROLES
    merged = Roles(declared[0]["backbone"], tuple(dict.fromkeys(b for spec in declared for b in spec["baselines"])),
                   next((spec["proposed"] for spec in declared if spec["proposed"]), ""),
                   tuple(dict.fromkeys(v for spec in declared for v in spec["variants"])))
    for spec in declared:
        if spec["backbone"] != merged.backbone or spec["proposed"] not in ("", merged.proposed):
            raise ValueError(f"the runs come from experiments with conflicting method roles ({len(declared)}); "
                             "report each experiment on its own")
    return merged

"""Which marts a change to the dbt project touches, from dbt's parsed manifest.

Each model gets a fingerprint of its logic: dbt's checksum of its SQL file, the
checksum dbt keeps of its contract, and the SQL of every macro of this project it
calls, directly or through another macro (a measure added to a macro's list changes
every model that loops over it, though no model file changed). A mart must be
reprocessed when its own fingerprint, or one of a model it reads from, differs from
the one recorded at the last deployment. Views on the analytics side are not marts:
they are rebuilt on every deployment anyway.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFingerprint:
    name: str
    checksum: str  # dbt's: the SHA-256 of the model's file
    logic: str  # that, the contract's checksum and the project's macros it calls


def _macro_digests(manifest, package: str) -> dict[str, str]:
    """Each macro of ``package`` with the macros it calls, transitively, as one digest."""
    macros = {uid: m for uid, m in manifest.macros.items() if m.package_name == package}
    found: dict[str, str] = {}

    def digest(uid: str, seen: frozenset[str]) -> str:
        if uid not in found:
            parts = [macros[uid].macro_sql]
            for called in sorted(set(macros[uid].depends_on.macros)):
                if called in macros and called not in seen:
                    parts.append(digest(called, seen | {uid}))
            found[uid] = hashlib.sha256("\0".join(parts).encode()).hexdigest()
        return found[uid]

    for uid in macros:
        digest(uid, frozenset())
    return found


def _models(manifest, package: str) -> dict[str, object]:
    return {
        uid: node
        for uid, node in manifest.nodes.items()
        if str(getattr(node.resource_type, "value", node.resource_type)) == "model"
        and node.package_name == package
    }


def fingerprints(manifest, package: str) -> dict[str, ModelFingerprint]:
    """The models of ``package`` (this project), by name."""
    macros = _macro_digests(manifest, package)
    found = {}
    for node in _models(manifest, package).values():
        parts = [node.checksum.checksum, str(node.contract.checksum or "")]
        parts += sorted(macros[m] for m in set(node.depends_on.macros) if m in macros)
        logic = hashlib.sha256("\0".join(parts).encode()).hexdigest()
        found[node.name] = ModelFingerprint(node.name, node.checksum.checksum, logic)
    return found


def upstream(manifest, package: str) -> dict[str, set[str]]:
    """Each model's name with the names of every model it reads from, transitively."""
    models = _models(manifest, package)
    parents = {
        uid: [p for p in node.depends_on.nodes if p in models] for uid, node in models.items()
    }
    found: dict[str, set[str]] = {}

    def ancestors(uid: str) -> set[str]:
        if uid not in found:
            found[uid] = set()  # a cycle (dbt refuses one) would end here
            names: set[str] = set()
            for parent in parents[uid]:
                names |= {models[parent].name} | ancestors(parent)
            found[uid] = names
        return found[uid]

    return {models[uid].name: ancestors(uid) for uid in models}


def changed_marts(
    deployed: dict[str, tuple[str, str]],
    current: dict[str, ModelFingerprint],
    ancestors: dict[str, set[str]],
    marts: tuple[str, ...],
) -> dict[str, str]:
    """Each mart whose logic changed since ``deployed`` (model: (checksum, logic)), with
    why, in a few words. Nothing when nothing was deployed before (no baseline)."""
    if not deployed:
        return {}

    def changed(name: str) -> bool:
        return name not in deployed or deployed[name][1] != current[name].logic

    reasons = {}
    for mart in marts:
        if mart not in deployed:
            reasons[mart] = "it is new"
        elif changed(mart):
            own = deployed[mart][0] != current[mart].checksum
            reasons[mart] = "its SQL changed" if own else "its contract or a macro it uses changed"
        else:
            moved = sorted(a for a in ancestors.get(mart, ()) if a in current and changed(a))
            if moved:
                reasons[mart] = f"upstream {', '.join(moved)} changed"
    return reasons

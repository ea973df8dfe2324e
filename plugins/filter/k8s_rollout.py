"""Filters for the k8s_rollout role: `kubectl rollout status` semantics as data.

`deployment | k8s_rollout_status` answers what `kubectl rollout status deployment/NAME` would
print at that moment, as {done, failed, message, generation, observed_generation, replicas,
updated, ready, available}. `replicasets | k8s_replicaset_at_revision(N)` picks the
ReplicaSet that holds a Deployment's revision N (the template to undo to).
"""

from __future__ import annotations

from typing import Any

REVISION = "deployment.kubernetes.io/revision"


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def k8s_rollout_status(deployment: dict[str, Any] | None) -> dict[str, Any]:
    """The rollout's state, judged as kubectl does (pkg/kubectl/polymorphichelpers/rollout_status)."""
    if not deployment:
        return {"done": False, "failed": True, "message": "the Deployment does not exist"}
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    desired = _int(spec.get("replicas", 1))
    figures = {
        "generation": _int(meta.get("generation")),
        "observed_generation": _int(status.get("observedGeneration")),
        "replicas": desired,
        "updated": _int(status.get("updatedReplicas")),
        "ready": _int(status.get("readyReplicas")),
        "available": _int(status.get("availableReplicas")),
        "revision": _int((meta.get("annotations") or {}).get(REVISION)),
    }
    name = meta.get("name", "?")

    def verdict(done: bool, failed: bool, message: str) -> dict[str, Any]:
        return {"done": done, "failed": failed, "message": message, **figures}

    if figures["generation"] > figures["observed_generation"]:
        return verdict(False, False, f"waiting for deployment {name!r} spec update to be observed")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return verdict(False, True, f"deployment {name!r} exceeded its progress deadline"
                           + (f": {cond['message']}" if cond.get("message") else ""))
    total = _int(status.get("replicas"))
    if figures["updated"] < desired:
        return verdict(False, False, f"{figures['updated']} out of {desired} new replicas have been updated")
    if total > figures["updated"]:
        return verdict(False, False, f"{total - figures['updated']} old replicas are pending termination")
    if figures["available"] < figures["updated"]:
        return verdict(False, False,
                       f"{figures['available']} of {figures['updated']} updated replicas are available")
    return verdict(True, False, f"deployment {name!r} successfully rolled out")


def k8s_replicaset_at_revision(replicasets: list[dict[str, Any]], revision: Any) -> dict[str, Any]:
    """The ReplicaSet whose revision annotation is `revision`; {} when none has it."""
    wanted = _int(revision)
    for rs in replicasets or []:
        if _int(((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION)) == wanted:
            return rs
    return {}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"k8s_rollout_status": k8s_rollout_status,
                "k8s_replicaset_at_revision": k8s_replicaset_at_revision}

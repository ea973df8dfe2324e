"""k8s_rollout_status: `kubectl rollout status` semantics; k8s_replicaset_at_revision."""

from __future__ import annotations

import importlib.util
from typing import Any

from helpers import ROOT

_spec = importlib.util.spec_from_file_location("k8s_rollout_filters", ROOT / "plugins" / "filter" / "k8s_rollout.py")
assert _spec and _spec.loader
k8s = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(k8s)


def deployment(generation: int = 2, observed: int = 2, desired: int = 3, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "erni-ki", "generation": generation,
                         "annotations": {"deployment.kubernetes.io/revision": "4"}},
            "spec": {"replicas": desired}, "status": {"observedGeneration": observed, **status}}


def test_each_waiting_state_is_reported_as_kubectl_does() -> None:
    assert "spec update to be observed" in k8s.k8s_rollout_status(deployment(generation=3, observed=2))["message"]
    st = k8s.k8s_rollout_status(deployment(desired=3, updatedReplicas=1))
    assert st["message"] == "1 out of 3 new replicas have been updated" and not st["done"] and not st["failed"]
    st = k8s.k8s_rollout_status(deployment(updatedReplicas=3, replicas=4))
    assert st["message"] == "1 old replicas are pending termination"
    st = k8s.k8s_rollout_status(deployment(updatedReplicas=3, availableReplicas=2))
    assert st["message"] == "2 of 3 updated replicas are available"


def test_complete_rollout_is_done_with_its_revision() -> None:
    st = k8s.k8s_rollout_status(deployment(updatedReplicas=3, availableReplicas=3, readyReplicas=3))
    assert st["done"] and not st["failed"] and st["revision"] == 4
    assert st["message"] == "deployment 'erni-ki' successfully rolled out"


def test_progress_deadline_exceeded_is_a_failure() -> None:
    cond = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "erni-ki-abc" has timed out progressing.'}
    st = k8s.k8s_rollout_status(deployment(updatedReplicas=1, conditions=[cond]))
    assert st["failed"] and not st["done"] and "exceeded its progress deadline" in st["message"]
    assert "timed out progressing" in st["message"]


def test_a_missing_deployment_fails() -> None:
    assert k8s.k8s_rollout_status(None)["failed"] is True


def test_the_replicaset_of_a_revision_is_found() -> None:
    sets = [{"metadata": {"name": f"rs{n}", "annotations": {"deployment.kubernetes.io/revision": str(n)}}}
            for n in (1, 2, 3)]
    assert k8s.k8s_replicaset_at_revision(sets, "2")["metadata"]["name"] == "rs2"
    assert k8s.k8s_replicaset_at_revision(sets, 9) == {}
    assert set(k8s.FilterModule().filters()) == {"k8s_rollout_status", "k8s_replicaset_at_revision"}

"""The Kubernetes API double (tests/k8sapi.py) driven by the real `kubernetes` client and by the real
kubernetes.core modules run through ansible-playbook: nothing is patched in-process."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException

from helpers import ROOT, PlaybookRun, free_port, run_playbook
from k8sapi import Forwarder, KubeAPIDouble

TOKEN = "k8s-double-test-token-0123456789"
GOOD, NEXT, BAD, ERRORING = "erni-ki:v1.1.0", "erni-ki:v1.2.0", "erni-ki:v9.9.9", "erni-ki:v1.3.0-rc1"
REVISION = "deployment.kubernetes.io/revision"
CAUSE = "kubernetes.io/change-cause"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class Kube:
    """The real kubernetes client pointed at the double, with a poller for asynchronous outcomes."""

    def __init__(self, double: KubeAPIDouble, cache: Path) -> None:
        self.double = double
        self.api = client.ApiClient(client.Configuration(host=double.url, api_key={
            "authorization": f"Bearer {double.token}"}))
        # typed loosely: the tests send plain dicts, as playbooks do, and the client takes them
        self.apps: Any = client.AppsV1Api(self.api)
        self.core: Any = client.CoreV1Api(self.api)
        self.dynamic = dynamic.DynamicClient(self.api, cache_file=str(cache))
        self.deployments = self.dynamic.resources.get(api_version="apps/v1", kind="Deployment")

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["metadata"]["namespace"] not in {n.metadata.name for n in self.core.list_namespace().items}:
            self.core.create_namespace({"metadata": {"name": body["metadata"]["namespace"]}})
        return dict(self.deployments.create(body=body).to_dict())

    def deployment(self, name: str = "erni-ki", namespace: str = "erni") -> dict[str, Any]:
        return dict(self.deployments.get(name=name, namespace=namespace).to_dict())

    def replicasets(self, namespace: str = "erni") -> list[Any]:
        return sorted(self.apps.list_namespaced_replica_set(namespace).items, key=lambda rs: rs.metadata.name)

    def pods(self, namespace: str = "erni", **selectors: str) -> list[Any]:
        return list(self.core.list_namespaced_pod(namespace, **selectors).items)

    def proxy(self, path: str, service: str = "erni-ki", namespace: str = "erni") -> requests.Response:
        return requests.get(f"{self.double.url}/api/v1/namespaces/{namespace}/services/{service}:8080/proxy{path}",
                            headers={"Authorization": f"Bearer {self.double.token}"}, timeout=5)

    def rolled_out(self, name: str = "erni-ki", namespace: str = "erni", timeout: float = 10) -> dict[str, Any]:
        return wait_for(lambda: complete(self.deployment(name, namespace)), timeout)


def wait_for(probe: Callable[[], Any], timeout: float = 10, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        time.sleep(interval)


def complete(deployment: dict[str, Any]) -> dict[str, Any] | None:
    """The Deployment when its rollout is done, as kubectl rollout status judges it."""
    spec, status = deployment["spec"], deployment.get("status") or {}
    done = (status.get("observedGeneration") == deployment["metadata"]["generation"]
            and status.get("updatedReplicas", 0) == status.get("replicas", 0) == status.get("availableReplicas", 0)
            == spec["replicas"])
    return deployment if done else None


def condition(deployment: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in deployment["status"]["conditions"] if c["type"] == kind)


def manifest(image: str, *, replicas: int = 2, deadline: int = 600, cause: str | None = None,
             name: str = "erni-ki", strategy: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "erni", "labels": {"app": name},
                         **({"annotations": {CAUSE: cause}} if cause else {})},
            "spec": {"replicas": replicas, "progressDeadlineSeconds": deadline,
                     "selector": {"matchLabels": {"app": name}}, **({"strategy": strategy} if strategy else {}),
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                         {"name": "app", "image": image, "ports": [{"containerPort": 8080}],
                          "env": [{"name": "LOG_LEVEL", "value": "info"}]}]}}}}


def task(title: str, module: str, /, **options: Any) -> dict[str, Any]:
    """A kubernetes.core task; the title names its result in what play() returns."""
    return {"name": title, f"kubernetes.core.{module}": options}


def k8s(name: str, definition: dict[str, Any], **options: Any) -> dict[str, Any]:
    """A kubernetes.core.k8s task that waits for the rollout, polling every second."""
    return task(name, "k8s", definition=definition, **{"wait": True, "wait_sleep": 1, "wait_timeout": 30, **options})


def auth_env(double: KubeAPIDouble, token: str | None = None) -> dict[str, str]:
    return {"K8S_AUTH_HOST": double.url, "K8S_AUTH_API_KEY": token or double.token, "K8S_AUTH_VERIFY_SSL": "false"}


def play(tmp_path: Path, tasks: list[dict[str, Any]], env: dict[str, str]) -> tuple[PlaybookRun, dict[str, Any]]:
    """Run the tasks on localhost with ansible-playbook; returns the run and each task's result by
    task name, read from the JSON stdout callback."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    inventory = tmp_path / "hosts.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}))
    # kubernetes.core caches discovery in the temporary directory: one per test keeps tests apart
    (tmp_path / "tmp").mkdir(exist_ok=True)
    run = run_playbook("-i", str(inventory), str(playbook), timeout=120, env={
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_CALLBACKS_ENABLED": "erni_report",
        "TMPDIR": str(tmp_path / "tmp"), "ERNI_REPORT_DIR": str(tmp_path / "reports"), **env})
    start = run.output.find("{\n")
    if start < 0:
        return run, {}
    report, _ = json.JSONDecoder().raw_decode(run.output, start)
    return run, {t["task"]["name"]: t["hosts"]["localhost"] for play in report["plays"] for t in play["tasks"]}


def writes(double: KubeAPIDouble) -> list[tuple[str, str, str]]:
    return [(r["method"], r["path"], r["contentType"]) for r in double.requests() if r["method"] in WRITES]


@pytest.fixture
def double() -> Iterator[KubeAPIDouble]:
    with KubeAPIDouble(TOKEN, bad_images=[BAD], erroring_images={ERRORING: 3}, ready_delay=0.2) as d:
        yield d


@pytest.fixture
def kube(double: KubeAPIDouble, tmp_path: Path) -> Kube:
    return Kube(double, tmp_path / "discovery.json")


def test_k8s_creates_updates_and_k8s_rollback_restores_a_deployment(
        double: KubeAPIDouble, kube: Kube, tmp_path: Path) -> None:
    kube.core.create_namespace({"metadata": {"name": "erni"}})
    run, r = play(tmp_path, [
        k8s("created", manifest(GOOD, cause="release 1.1.0")),
        k8s("updated", manifest(NEXT, cause="release 1.2.0")),
        task("rollback", "k8s_rollback", api_version="apps/v1", kind="Deployment", name="erni-ki", namespace="erni"),
    ], auth_env(double))
    assert run.rc == 0, run.output[-3000:]

    created = r["created"]["result"]
    assert r["created"]["method"] == "create" and created["metadata"]["annotations"][REVISION] == "1"
    assert complete(created) and created["status"]["availableReplicas"] == 2
    updated = r["updated"]["result"]
    assert r["updated"]["method"] == "update" and r["updated"]["changed"]
    assert updated["metadata"]["annotations"] == {REVISION: "2", CAUSE: "release 1.2.0"}
    assert updated["metadata"]["generation"] == updated["status"]["observedGeneration"] == 2
    assert updated["status"]["updatedReplicas"] == updated["status"]["replicas"] == 2
    assert updated["status"]["availableReplicas"] == 2
    assert condition(updated, "Progressing")["reason"] == "NewReplicaSetAvailable"
    assert ("PATCH", "/apis/apps/v1/namespaces/erni/deployments/erni-ki",
            "application/strategic-merge-patch+json") in writes(double)
    assert r["rollback"]["changed"] and r["rollback"]["rollback_info"][0]["method"] == "patch"
    assert ("PATCH", "/apis/apps/v1/namespaces/erni/deployments/erni-ki",
            "application/json-patch+json") in writes(double)

    after = kube.rolled_out()
    assert after["metadata"]["annotations"][REVISION] == "3" and after["metadata"]["generation"] == 3
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == GOOD
    first, second = sorted(kube.replicasets(), key=lambda rs: rs.metadata.creation_timestamp)
    assert first.spec.template.spec.containers[0].image == GOOD, "the rollback reused the first ReplicaSet"
    assert (first.metadata.annotations[REVISION], first.spec.replicas, first.status.available_replicas) == ("3", 2, 2)
    assert (second.metadata.annotations[REVISION], second.spec.replicas) == ("2", 0)
    assert first.metadata.annotations[CAUSE] == "release 1.1.0" and second.metadata.annotations[CAUSE] == \
        "release 1.2.0"
    template_hash = first.metadata.labels["pod-template-hash"]
    assert first.metadata.name == f"erni-ki-{template_hash}" and len(template_hash) == 10
    assert first.spec.selector.match_labels == {"app": "erni-ki", "pod-template-hash": template_hash}
    [owner] = first.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Deployment", "erni-ki", created["metadata"][
        "uid"], True)
    assert kube.proxy("/api/version").json() == {"version": "1.1.0"}


def test_a_bad_image_exceeds_the_progress_deadline_while_the_old_pods_keep_serving(
        double: KubeAPIDouble, kube: Kube, tmp_path: Path) -> None:
    kube.create(manifest(GOOD, deadline=2))
    kube.rolled_out()
    stuck = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    run, r = play(tmp_path, [k8s("stuck", manifest(BAD, deadline=2), wait_condition=stuck)], auth_env(double))
    assert run.rc == 0, run.output[-3000:]

    deployment = r["stuck"]["result"]
    progressing = condition(deployment, "Progressing")
    assert progressing["status"] == "False" and progressing["reason"] == "ProgressDeadlineExceeded"
    new_rs = next(rs for rs in kube.replicasets() if rs.metadata.annotations[REVISION] == "2")
    assert progressing["message"] == f'ReplicaSet "{new_rs.metadata.name}" has timed out progressing.'
    assert condition(deployment, "Available")["status"] == "True"
    # two replicas: maxSurge 25% rounds up to 1, maxUnavailable 25% down to 0
    assert deployment["status"]["availableReplicas"] == 2 and deployment["status"]["updatedReplicas"] == 1
    assert deployment["status"]["replicas"] == 3 and "unavailableReplicas" not in deployment["status"], \
        "a count of zero is left out, as the API leaves it out"
    [crashing] = kube.pods(label_selector=f"pod-template-hash={new_rs.metadata.labels['pod-template-hash']}")
    container = crashing.status.container_statuses[0]
    assert not container.ready and container.state.waiting.reason == "CrashLoopBackOff"
    assert container.restart_count >= 1 and container.image == BAD
    answers = [kube.proxy("/api/version") for _ in range(6)]
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"version": "1.1.0"})] * 6
    assert kube.proxy("/health").json() == {"status": "ok"}


def test_k8s_drain_evicts_pods_to_other_nodes_and_uncordon_makes_the_node_schedulable(
        double: KubeAPIDouble, kube: Kube, tmp_path: Path) -> None:
    kube.create(manifest(GOOD, replicas=3))
    kube.rolled_out()
    [victim] = kube.pods(field_selector="spec.nodeName=node-1")
    before = len(double.requests())
    run, r = play(tmp_path, [task("drain", "k8s_drain", name="node-1",
                                  delete_options={"wait_timeout": 10, "wait_sleep": 1})], auth_env(double))
    assert run.rc == 0, run.output[-3000:]
    assert r["drain"]["changed"]
    assert r["drain"]["result"] == "node node-1 marked unschedulable. 1 Pod(s) deleted from node."
    assert kube.core.read_node("node-1").spec.unschedulable is True
    assert kube.pods(field_selector="spec.nodeName=node-1") == []
    assert kube.rolled_out()["status"]["readyReplicas"] == 3
    pods = kube.pods()
    assert len(pods) == 3 and victim.metadata.name not in {p.metadata.name for p in pods}
    assert {p.spec.node_name for p in pods} == {"node-2", "node-3"}
    served = double.requests()[before:]
    assert [(r["method"], r["path"], r["contentType"]) for r in served if r["method"] in WRITES] == [
        ("PATCH", "/api/v1/nodes/node-1", "application/strategic-merge-patch+json"),
        ("POST", f"/api/v1/namespaces/erni/pods/{victim.metadata.name}/eviction", "")]
    assert {"method": "GET", "path": "/api/v1/pods", "query": {"fieldSelector": "spec.nodeName=node-1"},
            "contentType": "", "code": 200} in served

    run, r = play(tmp_path, [task("uncordon", "k8s_drain", name="node-1", state="uncordon")], auth_env(double))
    assert run.rc == 0, run.output[-3000:]
    assert r["uncordon"]["changed"] and r["uncordon"]["result"] == "node node-1 marked schedulable."
    assert kube.core.read_node("node-1").spec.unschedulable is None
    assert kube.pods(field_selector="spec.nodeName=node-1") == [], "nothing moves back by itself"


def test_a_wrong_token_fails_with_401_and_nothing_is_written(double: KubeAPIDouble, tmp_path: Path) -> None:
    wrong = {"host": double.url, "api_key": "not-the-token"}
    run, r = play(tmp_path, [
        # no discovery cache yet: the module fails on its first request, GET /version
        {**k8s("fresh", manifest(GOOD), **wrong), "ignore_errors": True},
        task("discovered", "k8s_info", api_version="apps/v1", kind="Deployment", namespace="erni"),
        # discovery cached by the good token's run: it fails on reading the Deployment
        {**k8s("cached", manifest(GOOD), **wrong), "ignore_errors": True},
    ], auth_env(double))
    assert run.rc == 0, run.output[-3000:]
    fresh, cached = r["fresh"], r["cached"]
    assert fresh["failed"] and fresh["msg"].startswith("Task failed: Module failed: 401\nReason: Unauthorized")
    assert '"reason": "Unauthorized"' in fresh["msg"]
    assert cached["failed"] and cached["msg"].startswith("Failed to retrieve requested object: ")
    assert '"message": "Unauthorized"' in cached["msg"]
    assert TOKEN not in fresh["msg"] + cached["msg"]
    assert r["discovered"]["resources"] == []
    served = double.requests()
    refused = [(x["method"], x["path"]) for x in served if x["code"] == 401]
    assert refused == [("GET", "/version"), ("GET", "/apis/apps/v1/namespaces/erni/deployments/erni-ki")]
    assert not [x for x in served if x["method"] in WRITES]


def test_an_unreachable_api_fails_clearly(tmp_path: Path) -> None:
    env = {"K8S_AUTH_HOST": f"http://127.0.0.1:{free_port()}", "K8S_AUTH_API_KEY": TOKEN,
           "K8S_AUTH_VERIFY_SSL": "false"}
    attempt = task("attempt", "k8s_info", api_version="apps/v1", kind="Deployment", namespace="erni")
    run, r = play(tmp_path, [{**attempt, "ignore_errors": True}], env)
    assert run.rc == 0, run.output[-3000:]
    assert r["attempt"]["failed"]
    assert "Max retries exceeded with url: /version" in r["attempt"]["msg"]
    assert "Connection refused" in r["attempt"]["msg"]


def test_k8s_json_patch_through_a_kubeconfig_file(double: KubeAPIDouble, kube: Kube, tmp_path: Path) -> None:
    kube.create(manifest(GOOD, replicas=1))
    kube.rolled_out()
    kubeconfig = double.write_kubeconfig(tmp_path / "kubeconfig")
    run, r = play(tmp_path, [task(
        "patched", "k8s_json_patch", api_version="apps/v1", kind="Deployment", namespace="erni", name="erni-ki",
        wait=True, wait_sleep=1, wait_timeout=20, patch=[
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/metadata/annotations/erni.dev~1owner", "value": "platform~team"},
            {"op": "remove", "path": "/spec/template/spec/containers/0/env/0"}])],
        {"K8S_AUTH_KUBECONFIG": str(kubeconfig)})
    assert run.rc == 0, run.output[-3000:]

    patched = r["patched"]["result"]
    assert r["patched"]["changed"]
    assert patched["metadata"]["annotations"]["erni.dev/owner"] == "platform~team"
    assert "env" not in patched["spec"]["template"]["spec"]["containers"][0], "an empty list is left out"
    assert complete(patched) and patched["status"]["availableReplicas"] == 3
    assert patched["metadata"]["generation"] == 2, "one patch, one new generation"
    assert patched["metadata"]["annotations"][REVISION] == "2"
    assert ("PATCH", "/apis/apps/v1/namespaces/erni/deployments/erni-ki",
            "application/json-patch+json") in writes(double)


def test_proxy_answers_from_ready_pods_round_robin_and_counts_in_metrics(double: KubeAPIDouble,
                                                                        kube: Kube) -> None:
    kube.create(manifest(ERRORING, name="canary"))
    kube.create(manifest(BAD, name="broken", replicas=1))
    kube.rolled_out("canary")
    answers = [kube.proxy("/api/version", service="canary") for _ in range(6)]
    assert [a.status_code for a in answers] == [200, 200, 500, 200, 200, 500]
    assert answers[0].json() == {"version": "1.3.0-rc1"}
    assert kube.proxy("/some/where", service="canary").json() == {"path": "/some/where"}
    unavailable = kube.proxy("/health", service="broken")
    assert unavailable.status_code == 503
    assert unavailable.json()["reason"] == "ServiceUnavailable"
    assert kube.proxy("/health", service="nothing").status_code == 404
    assert requests.get(f"{double.url}/api/v1/namespaces/erni/services/canary/proxy/health",
                        timeout=5).status_code == 401

    metrics = requests.get(f"{double.url}/metrics", timeout=5)
    assert metrics.status_code == 200 and metrics.headers["Content-Type"].startswith("text/plain")
    lines = set(metrics.text.splitlines())
    assert "# TYPE erni_k8s_proxy_requests_total counter" in lines
    prefix = 'erni_k8s_proxy_requests_total{namespace="erni",deployment='
    assert prefix + '"canary",version="1.3.0-rc1",code="200"} 5' in lines
    assert prefix + '"canary",version="1.3.0-rc1",code="500"} 2' in lines
    assert prefix + '"broken",version="",code="503"} 1' in lines


def test_a_rolling_update_never_drops_below_the_available_minimum(kube: Kube) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    kube.create(manifest(GOOD, replicas=4, strategy=strategy))
    kube.rolled_out()
    kube.apps.patch_namespaced_deployment("erni-ki", "erni", {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": NEXT}]}}}})
    seen = []
    while not complete(deployment := kube.deployment()):
        seen.append((len(kube.pods()), deployment["status"].get("availableReplicas", 0)))
        time.sleep(0.02)
    assert len(seen) > 5 and max(p for p, _ in seen) == 5 and min(a for _, a in seen) == 4
    assert [rs.spec.replicas for rs in kube.replicasets()] in ([0, 4], [4, 0])
    assert {p.spec.containers[0].image for p in kube.pods()} == {NEXT}


def test_the_simulation_replays_events_in_time_order_however_seldom_clients_look(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    with KubeAPIDouble(TOKEN, bad_images=[BAD], ready_delay=2, clock=lambda: now[0]) as double:
        kube = Kube(double, tmp_path / "discovery.json")
        one_by_one = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        kube.create(manifest(GOOD, replicas=4, strategy=one_by_one))
        now[0] += 2
        assert complete(kube.deployment())
        kube.apps.patch_namespaced_deployment("erni-ki", "erni", {"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": NEXT}]}}}})
        now[0] += 60
        assert complete(kube.deployment())
        started = sorted(p.metadata.creation_timestamp.timestamp() - now[0] for p in kube.pods())
        assert started == [-60, -58, -56, -54], "each new pod waited for the one before to be Ready"

        kube.apps.patch_namespaced_deployment("erni-ki", "erni", {"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": BAD}]}}}})
        now[0] += 599
        assert condition(kube.deployment(), "Progressing")["reason"] == "ReplicaSetUpdated"
        stalled_at = now[0] + 1
        now[0] += 30
        progressing = condition(kube.deployment(), "Progressing")
        assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
        assert progressing["lastTransitionTime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stalled_at))
        [crashing] = [p for p in kube.pods() if p.spec.containers[0].image == BAD]
        assert crashing.status.container_statuses[0].restart_count == 629


def test_max_surge_zero_and_recreate_take_pods_down_before_new_ones_are_ready(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    with KubeAPIDouble(TOKEN, bad_images=[BAD], ready_delay=2, clock=lambda: now[0]) as double:
        kube = Kube(double, tmp_path / "discovery.json")
        one_at_a_time = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "25%"}}
        kube.create(manifest(GOOD, replicas=1, strategy=one_at_a_time))
        kube.create(manifest(GOOD, name="batch", strategy={"type": "Recreate"}))
        now[0] += 2
        kube.apps.patch_namespaced_deployment("erni-ki", "erni", {"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": BAD}]}}}})
        kube.apps.patch_namespaced_deployment("batch", "erni", {"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": NEXT}]}}}})

        # both fenceposts resolve to 0 for one replica, and Kubernetes then allows 1 unavailable
        assert kube.proxy("/health").status_code == 503
        status = kube.deployment()["status"]
        assert "availableReplicas" not in status and status["updatedReplicas"] == 1
        assert condition(kube.deployment(), "Available")["status"] == "True"
        batch = kube.deployment("batch")
        assert {p.spec.containers[0].image for p in kube.pods(label_selector="app=batch")} == {NEXT}
        assert "availableReplicas" not in batch["status"]
        assert condition(batch, "Available")["reason"] == "MinimumReplicasUnavailable"
        now[0] += 2
        assert complete(kube.deployment("batch"))


def test_discovery_and_errors_are_what_the_kubernetes_client_expects(double: KubeAPIDouble, kube: Kube) -> None:
    assert kube.dynamic.version["kubernetes"]["gitVersion"].startswith("v1.")
    pods = kube.dynamic.resources.get(api_version="v1", kind="Pod")
    assert pods.namespaced and "eviction" in pods.subresources
    aggregated = requests.get(f"{double.url}/apis", timeout=5, headers={
        "Authorization": f"Bearer {TOKEN}",
        "Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"})
    assert aggregated.json()["kind"] == "APIGroupList"
    assert {g["name"] for g in aggregated.json()["groups"]} == {"apps", "policy"}
    assert kube.dynamic.resources.get(api_version="policy/v1", kind="PodDisruptionBudget").get(
        namespace="default").items == []

    anonymous = requests.get(f"{double.url}/api/v1/nodes", timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    assert {n.metadata.name for n in kube.core.list_node().items} == {"node-1", "node-2", "node-3"}

    def status_of(call: Callable[[], Any]) -> dict[str, Any]:
        with pytest.raises(ApiException) as caught:
            call()
        body: dict[str, Any] = json.loads(str(caught.value.body))
        assert body["kind"] == "Status" and body["code"] == caught.value.status
        return body

    missing = status_of(lambda: kube.apps.read_namespaced_deployment("nope", "default"))
    assert (missing["reason"], missing["message"]) == ("NotFound", 'deployments.apps "nope" not found')
    body = manifest(GOOD)
    no_namespace = status_of(lambda: kube.deployments.create(body=body))
    assert (no_namespace["reason"], no_namespace["message"]) == ("NotFound", 'namespaces "erni" not found')
    kube.create(body)
    assert status_of(lambda: kube.create(body))["reason"] == "AlreadyExists"
    stale = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
    conflict = status_of(lambda: kube.apps.replace_namespaced_deployment("erni-ki", "erni", stale))
    assert conflict["reason"] == "Conflict" and conflict["code"] == 409
    current = kube.rolled_out()  # until then the controller's status writes move the resourceVersion on
    fresh = {**body, "metadata": {**body["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
             "spec": {**body["spec"], "replicas": 3}}
    replaced = kube.apps.replace_namespaced_deployment("erni-ki", "erni", fresh)
    assert replaced.metadata.generation == 2 and replaced.metadata.annotations is None, "PUT replaces annotations"
    assert kube.deployment()["metadata"]["annotations"] == {REVISION: "1"}, "the controller puts the revision back"
    assert [d.metadata.name for d in kube.apps.list_deployment_for_all_namespaces(
        label_selector="app in (erni-ki, other),!canary,app!=batch").items] == ["erni-ki"]
    mismatched = manifest(GOOD, name="other")
    mismatched["spec"]["template"]["metadata"]["labels"] = {"app": "elsewhere"}
    invalid = status_of(lambda: kube.apps.create_namespaced_deployment("erni", mismatched))
    assert invalid["code"] == 422 and invalid["reason"] == "Invalid"
    assert invalid["details"]["causes"][0]["field"] == "spec.template.metadata.labels"
    unsupported = requests.patch(f"{double.url}/apis/apps/v1/namespaces/erni/deployments/erni-ki", data="{}",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"},
                                 timeout=5)
    assert unsupported.status_code == 415 and unsupported.json()["reason"] == "UnsupportedMediaType"


def test_patch_flavours_generation_and_resource_version(kube: Kube) -> None:
    body = manifest(GOOD, replicas=1)
    body["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "proxy:2"})
    kube.create(body)
    before = kube.rolled_out()

    def patch(content_type: str, patch_body: Any) -> dict[str, Any]:
        return dict(kube.dynamic.patch(kube.deployments, patch_body, name="erni-ki", namespace="erni",
                                       content_type=content_type).to_dict())

    labelled = patch("application/merge-patch+json", {"metadata": {"labels": {"tier": "web"}}})
    assert labelled["metadata"]["generation"] == before["metadata"]["generation"]
    assert labelled["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
    merged = patch("application/strategic-merge-patch+json", {
        "metadata": {"labels": {"tier": None}},
        "spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": NEXT, "env": [{"name": "FEATURE", "value": "on"}]},
            {"name": "sidecar", "$patch": "delete"}]}}}})
    [app] = merged["spec"]["template"]["spec"]["containers"]
    assert app["image"] == NEXT and [e["name"] for e in app["env"]] == ["LOG_LEVEL", "FEATURE"]
    assert app["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert "tier" not in merged["metadata"]["labels"]
    assert merged["metadata"]["generation"] == before["metadata"]["generation"] + 1
    replaced = patch("application/merge-patch+json", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": GOOD}]}}}})
    assert "env" not in replaced["spec"]["template"]["spec"]["containers"][0], "a merge patch replaces lists"
    with pytest.raises(ApiException) as failed:
        patch("application/json-patch+json", [{"op": "test", "path": "/spec/replicas", "value": 7}])
    assert failed.value.status == 422
    applied = dict(kube.dynamic.server_side_apply(kube.deployments, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "erni-ki", "namespace": "erni"},
        "spec": {"replicas": 2}}, field_manager="erni-deploy", force_conflicts=True).to_dict())
    assert applied["spec"]["replicas"] == 2 and applied["spec"]["template"]["spec"]["containers"][0]["image"] == GOOD
    with pytest.raises(ApiException) as unmanaged:
        kube.dynamic.server_side_apply(kube.deployments, {"apiVersion": "apps/v1", "kind": "Deployment",
                                                          "metadata": {"name": "erni-ki", "namespace": "erni"}})
    assert unmanaged.value.status == 422
    assert kube.rolled_out()["metadata"]["annotations"][REVISION] == "3"


def test_deleting_a_deployment_collects_its_replicasets_and_pods_unless_orphaned_and_orphans_are_adopted(
        kube: Kube) -> None:
    kube.create(manifest(GOOD, name="keep"))
    kube.create(manifest(GOOD, name="drop"))
    kube.rolled_out("keep")
    kube.rolled_out("drop")
    kube.apps.delete_namespaced_deployment("drop", "erni")
    kube.apps.delete_namespaced_deployment("keep", "erni", propagation_policy="Orphan")
    assert kube.pods(label_selector="app=drop") == []
    [orphan] = kube.replicasets()
    assert orphan.metadata.labels["app"] == "keep" and not orphan.metadata.owner_references
    pods = {p.metadata.name for p in kube.pods(label_selector="app=keep")}
    assert len(pods) == 2

    again = kube.create(manifest(GOOD, name="keep"))
    [adopted] = kube.replicasets()
    assert adopted.metadata.name == orphan.metadata.name
    assert adopted.metadata.owner_references[0].uid == again["metadata"]["uid"]
    assert {p.metadata.name for p in kube.pods(label_selector="app=keep")} == pods
    assert kube.rolled_out("keep")["metadata"]["annotations"][REVISION] == "1"


def test_the_command_line_serves_until_sigterm_and_takes_image_behaviour_at_runtime(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen([sys.executable, "-m", "tests.k8sapi", "--token", TOKEN, "--bad-image", BAD,
                             "--slow-image", f"{NEXT}=4", "--erroring-image", f"{ERRORING}=3",
                             "--kubeconfig", str(kubeconfig)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        images = requests.get(f"{url}/_double/images", timeout=5).json()
        assert images == {"bad": [BAD], "slow": {NEXT: 4.0}, "erroring": {ERRORING: 3}}
        changed = requests.post(f"{url}/_double/images", json={"bad": []}, timeout=5).json()
        assert changed["bad"] == [] and changed["slow"] == {NEXT: 4.0}
        assert requests.post(f"{url}/_double/images", json={"slow": {NEXT: "soon"}}, timeout=5).status_code == 400
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        assert configuration.host == url
        core: Any = client.CoreV1Api(client.ApiClient(configuration))
        assert [n.metadata.name for n in core.list_node().items] == ["node-1", "node-2", "node-3"]
        assert requests.get(f"{url}/_double/requests", timeout=5).json() == [
            {"method": "GET", "path": "/api/v1/nodes", "query": {}, "contentType": "", "code": 200}]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


# --- backends per namespace, node ports, service discovery, pod logs --------------------------------

class Echo:
    """A real HTTP process standing for pods: answers every request with JSON naming itself and
    echoing what it got; /moved answers a redirect (which a proxy hands back, not follows)."""

    def __init__(self, name: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def handle_any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code, payload = (302, b"") if self.path == "/moved" else (200, json.dumps({
                    "backend": name, "method": self.command, "path": self.path, "body": body.decode(),
                    "authorization": self.headers.get("Authorization")}).encode())
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                if code == 302:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.target = f"127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def echoes() -> Iterator[dict[str, Echo]]:
    servers = {name: Echo(name) for name in ("staging", "production", "next")}
    yield servers
    for server in servers.values():
        server.httpd.shutdown()
        server.httpd.server_close()


def deploy(kube: Kube, image: str, *, name: str = "erni-ki", namespace: str = "erni", replicas: int = 1) -> None:
    body = manifest(image, name=name, replicas=replicas)
    body["metadata"]["namespace"] = namespace
    kube.create(body)


def test_backends_per_namespace_come_before_the_image_entry(echoes: dict[str, Echo], tmp_path: Path) -> None:
    backends = {f"staging/{GOOD}": echoes["staging"].url, GOOD: echoes["production"].url}
    with KubeAPIDouble(TOKEN, ready_delay=0, backends=backends) as double:
        kube = Kube(double, tmp_path / "discovery.json")
        for namespace in ("staging", "production"):
            deploy(kube, GOOD, namespace=namespace)
        deploy(kube, NEXT, name="next", namespace="staging")
        for namespace in ("staging", "production"):
            kube.rolled_out(namespace=namespace)
        kube.rolled_out("next", namespace="staging")

        assert double.backend("staging", GOOD) == echoes["staging"].url
        assert double.backend("production", GOOD) == echoes["production"].url
        assert double.backend("staging", NEXT) is None
        staged = requests.post(double.ingress_url("staging", "erni-ki") + "/api/chats?page=2", data="hello",
                               headers={"Authorization": "Bearer app-token"}, timeout=5)
        assert staged.status_code == 200
        assert staged.json() == {"backend": "staging", "method": "POST", "path": "/api/chats?page=2",
                                 "body": "hello", "authorization": "Bearer app-token"}
        produced = requests.get(double.ingress_url("production", "erni-ki") + "/health", timeout=5)
        assert produced.json()["backend"] == "production"
        made_up = requests.get(double.ingress_url("staging", "next") + "/api/version", timeout=5)
        assert made_up.json() == {"version": "1.2.0"}, "no backend: the proxy's made-up answer"
        missing = requests.get(double.ingress_url("staging", "nothing") + "/health", timeout=5)
        assert missing.status_code == 404 and missing.json()["reason"] == "NotFound"


def test_a_node_port_forwards_every_method_like_the_front_door_until_stopped(
        echoes: dict[str, Echo], tmp_path: Path) -> None:
    double = KubeAPIDouble(TOKEN, bad_images=[BAD], ready_delay=0, backends={GOOD: echoes["production"].url})
    with double:
        kube = Kube(double, tmp_path / "discovery.json")
        deploy(kube, GOOD, replicas=2)
        deploy(kube, BAD, name="broken")
        deploy(kube, NEXT, name="next")
        kube.rolled_out()
        kube.rolled_out("next")
        port = double.node_port("erni", "erni-ki")
        assert double.node_port("erni", "erni-ki") == port, "one node port per Deployment"
        assert double.node_ports() == {("erni", "erni-ki"): port}

        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        sockets = set()
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            connection.request(method, "/api/chats/7?x=1", body=f"{method} body".encode())
            answer = connection.getresponse()
            assert answer.status == 200 and not answer.will_close, "HTTP/1.1 keep-alive"
            assert answer.getheader("Content-Length") == str(len(payload := answer.read()))
            assert json.loads(payload) == {"backend": "production", "method": method, "path": "/api/chats/7?x=1",
                                           "body": f"{method} body", "authorization": None}
            sockets.add(id(connection.sock))
        assert len(sockets) == 1, "every request went over the same connection"
        connection.request("HEAD", "/health")
        head = connection.getresponse()
        assert head.status == 200 and head.read() == b""
        direct = requests.head(f"{echoes['production'].url}/health", timeout=5)
        assert head.getheader("Content-Length") == direct.headers["Content-Length"], "the backend's length"
        moved = requests.get(f"http://127.0.0.1:{port}/moved", allow_redirects=False, timeout=5)
        assert (moved.status_code, moved.headers["Location"]) == (302, "/elsewhere"), "redirects are handed back"
        connection.close()

        assert requests.get(f"http://127.0.0.1:{double.node_port('erni', 'broken')}/health", timeout=5
                            ).status_code == 503
        assert requests.get(f"http://127.0.0.1:{double.node_port('erni', 'next')}/api/version", timeout=5
                            ).json() == {"version": "1.2.0"}
        assert requests.get(f"http://127.0.0.1:{double.node_port('erni', 'none')}/", timeout=5).status_code == 404
        lines = requests.get(f"{double.url}/metrics", timeout=5).text.splitlines()
        assert 'erni_k8s_proxy_requests_total{namespace="erni",deployment="erni-ki",version="1.1.0",code="200"} ' \
               '7' in lines, "six methods and a HEAD"
        assert 'erni_k8s_proxy_requests_total{namespace="erni",deployment="erni-ki",version="1.1.0",code="302"} ' \
               '1' in lines
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    with pytest.raises(RuntimeError):
        double.node_port("erni", "erni-ki")


def test_scrape_targets_list_the_backends_of_ready_pods_and_are_replaced_atomically(
        echoes: dict[str, Echo], tmp_path: Path) -> None:
    targets = tmp_path / "sd" / "erni.json"
    backends = {f"staging/{GOOD}": echoes["staging"].url, GOOD: echoes["production"].url,
                NEXT: echoes["next"].url, BAD: echoes["next"].url}
    labels = {"production": {"env": "production", "team": "erni"}}
    double = KubeAPIDouble(TOKEN, bad_images=[BAD], ready_delay=0.1, backends=backends, scrape_targets=targets,
                           target_labels=labels)
    with double:
        assert json.loads(targets.read_text()) == []
        kube = Kube(double, tmp_path / "discovery.json")
        deploy(kube, GOOD, namespace="staging", replicas=2)
        deploy(kube, GOOD, namespace="production")
        deploy(kube, BAD, name="broken", namespace="production")
        deploy(kube, NEXT, name="orphan", namespace="production")
        kube.rolled_out("orphan", namespace="production")
        kube.apps.delete_namespaced_deployment("orphan", "production", propagation_policy="Orphan")
        kube.core.create_namespaced_pod("production", {"metadata": {"name": "loose"}, "spec": {
            "containers": [{"name": "app", "image": GOOD}]}})

        expected = [
            {"targets": [echoes["production"].target], "labels": {
                "namespace": "production", "deployment": "erni-ki", "env": "production", "team": "erni"}},
            {"targets": [echoes["staging"].target], "labels": {"namespace": "staging", "deployment": "erni-ki"}}]
        wait_for(lambda: json.loads(targets.read_text()) == expected, timeout=5)
        assert double.scrape_target_groups() == expected, \
            "two staging pods, one target; no target for a pod that is not Ready or not a Deployment's"
        written = targets.stat()
        time.sleep(0.6)
        assert (targets.stat().st_ino, targets.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns), \
            "an unchanged list is not written again"

        with targets.open() as before:
            kube.apps.patch_namespaced_deployment("erni-ki", "production", {"spec": {"template": {"spec": {
                "containers": [{"name": "app", "image": NEXT}]}}}})
            kube.rolled_out(namespace="production")
            production = {"namespace": "production", "deployment": "erni-ki", "env": "production", "team": "erni"}
            wait_for(lambda: json.loads(targets.read_text())[0] == {"targets": [echoes["next"].target],
                                                                    "labels": production}, timeout=5)
            assert os.fstat(before.fileno()).st_nlink == 0 and json.loads(before.read()) == expected, \
                "replaced by a rename, not rewritten in place"
        kube.apps.delete_namespaced_deployment("erni-ki", "staging")
        wait_for(lambda: len(json.loads(targets.read_text())) == 1, timeout=5)
    assert json.loads(targets.read_text()) == []
    assert [p.name for p in targets.parent.iterdir()] == ["erni.json"], "no temporary file left behind"


def test_pod_logs_tell_each_pods_simulated_life_to_the_client_and_to_k8s_log(tmp_path: Path) -> None:
    t0 = 1_800_000_000.0
    now = [t0]
    with KubeAPIDouble(TOKEN, bad_images=[BAD], ready_delay=2, clock=lambda: now[0]) as double:
        kube = Kube(double, tmp_path / "discovery.json")
        deploy(kube, GOOD)
        deploy(kube, BAD, name="broken")
        kube.core.create_namespaced_pod("erni", {"metadata": {"name": "pair"}, "spec": {"containers": [
            {"name": "app", "image": GOOD}, {"name": "sidecar", "image": "proxy:2"}]}})
        now[0] += 3.5
        [good] = kube.pods(label_selector="app=erni-ki")
        [bad] = kube.pods(label_selector="app=broken")
        assert "log" in kube.dynamic.resources.get(api_version="v1", kind="Pod").subresources

        def log(pod: str, **options: Any) -> str:
            return str(kube.core.read_namespaced_pod_log(pod, "erni", **options))

        name, node, ip = good.metadata.name, good.spec.node_name, good.status.pod_ip
        life = [f"pod erni/{name} scheduled to node {node}, pod IP {ip}",
                f'container app: pulling image "{GOOD}"', f'container app: started, image "{GOOD}"',
                "container app: Ready"]
        assert log(name) == "".join(f"{line}\n" for line in life)
        stamped = log(name, timestamps=True).splitlines()
        assert stamped == [f"2027-01-15T08:00:00.000000Z {line}" for line in life[:3]] + [
            f"2027-01-15T08:00:02.000000Z {life[3]}"]
        assert log(name, since_seconds=2).splitlines() == ["container app: Ready"]
        assert log(name, tail_lines=2).splitlines() == life[2:]
        assert log(name, tail_lines=0) == ""

        crashes = log(bad.metadata.name).splitlines()
        assert crashes[2] == f'container app: started, image "{BAD}"' and len(crashes) == 6
        assert crashes[3:] == [f"container app: exited with code 1 (Error), restart {n}, back-off restarting "
                               "failed container (CrashLoopBackOff)" for n in (1, 2, 3)]
        assert bad.status.container_statuses[0].restart_count == 3
        assert log(bad.metadata.name, previous=True) == log(bad.metadata.name)
        assert log("pair", container="sidecar").splitlines()[-1] == "container sidecar: Ready"

        def refused(pod: str, **options: Any) -> dict[str, Any]:
            with pytest.raises(ApiException) as caught:
                log(pod, **options)
            status: dict[str, Any] = json.loads(str(caught.value.body))
            assert status["kind"] == "Status" and status["code"] == caught.value.status
            return status

        assert refused(name, container="nope")["message"] == f"container nope is not valid for pod {name}"
        assert refused(name, container="nope")["code"] == 400
        assert refused("pair")["message"] == "a container name must be specified for pod pair, choose one of: " \
                                             "[app sidecar]"
        assert refused(name, previous=True)["code"] == 400
        assert refused(name, since_seconds=0)["reason"] == "Invalid"
        assert refused("gone")["message"] == 'pods "gone" not found'

        run, r = play(tmp_path, [task("by name", "k8s_log", namespace="erni", name=name),
                                 task("by label", "k8s_log", namespace="erni", label_selectors=["app=broken"],
                                      tail_lines=1)], auth_env(double))
        assert run.rc == 0, run.output[-3000:]
        assert r["by name"]["log_lines"] == [*life, ""]
        assert r["by label"]["log_lines"] == [crashes[-1], ""]


def test_the_command_line_opens_node_ports_and_keeps_scrape_targets(echoes: dict[str, Echo], tmp_path: Path) -> None:
    targets = tmp_path / "targets.json"
    proc = subprocess.Popen([sys.executable, "-m", "tests.k8sapi", "--token", TOKEN, "--ready-delay", "0",
                             "--backend", f"staging/{GOOD}={echoes['staging'].url}",
                             "--backend", f"{GOOD}={echoes['production'].url}",
                             "--node-port", "staging/erni-ki=0", "--node-port", "production/erni-ki=0",
                             "--scrape-targets", str(targets), "--target-labels", "staging=env=staging,tier=web",
                             "--target-labels", "staging=team=erni"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        ports = {}
        for _ in range(2):
            word, deployment, port = proc.stdout.readline().split()
            assert word == "node-port"
            ports[deployment] = int(port)
        assert set(ports) == {"staging/erni-ki", "production/erni-ki"}
        assert json.loads(targets.read_text()) == []
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for namespace in ("staging", "production"):
            requests.post(f"{url}/api/v1/namespaces", json={"metadata": {"name": namespace}}, headers=headers,
                          timeout=5).raise_for_status()
            body = manifest(GOOD, replicas=1)
            body["metadata"]["namespace"] = namespace
            requests.post(f"{url}/apis/apps/v1/namespaces/{namespace}/deployments", json=body, headers=headers,
                          timeout=5).raise_for_status()
        wait_for(lambda: len(json.loads(targets.read_text())) == 2, timeout=5)
        assert json.loads(targets.read_text()) == [
            {"targets": [echoes["production"].target], "labels": {"namespace": "production", "deployment": "erni-ki"}},
            {"targets": [echoes["staging"].target], "labels": {
                "namespace": "staging", "deployment": "erni-ki", "env": "staging", "tier": "web", "team": "erni"}}]
        for namespace in ("staging", "production"):
            answer = requests.get(f"http://127.0.0.1:{ports[f'{namespace}/erni-ki']}/health", timeout=5)
            assert answer.json()["backend"] == namespace
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert json.loads(targets.read_text()) == []


def test_k8s_present_creates_a_namespace_and_leaves_an_existing_one_unchanged(double: KubeAPIDouble,
                                                                               tmp_path: Path) -> None:
    """kubernetes.core.k8s patches an object that exists (PATCH on namespaces, as the API allows)."""
    def namespace(name: str) -> dict[str, Any]:
        return task(name, "k8s", state="present",
                    definition={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    run, results = play(tmp_path, [namespace("default"), namespace("fresh"), namespace("fresh")], auth_env(double))
    assert run.rc == 0, run.output[-3000:]
    assert results["default"]["changed"] is False and results["default"]["method"] == "update"
    assert results["fresh"]["changed"] is False and results["fresh"]["method"] == "update"
    methods = [(m, p) for m, p, _ in writes(double)]
    assert ("POST", "/api/v1/namespaces") in methods and ("PATCH", "/api/v1/namespaces/fresh") in methods


def test_the_forwarder_resends_an_idempotent_request_on_a_stale_connection_but_never_a_post() -> None:
    """A backend that closes a kept-alive connection at its second request without answering:
    a GET is sent again on a new connection, a POST fails (it may have been acted on)."""
    seen: list[str] = []

    def serve(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            for number in (1, 2):
                head = b"".join(iter(reader.readline, b"\r\n"))
                if not head:
                    return
                found = re.search(rb"(?i)content-length: *(\d+)", head)
                reader.read(int(found.group(1)) if found else 0)
                seen.append(head.split(b" ", 1)[0].decode())
                if number == 2:
                    return   # closed without an answer
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    forwarder, backend = Forwarder(), f"http://127.0.0.1:{port}"
    try:
        assert forwarder.send(backend, "POST", "/chats", {}, b"{}")[0] == 200
        with pytest.raises(http.client.RemoteDisconnected):
            forwarder.send(backend, "POST", "/chats", {}, b"{}")
        assert seen == ["POST", "POST"], "the POST was not sent again"
        assert forwarder.send(backend, "GET", "/health", {}, b"")[0] == 200
        assert forwarder.send(backend, "GET", "/health", {}, b"")[2] == b"ok"
        assert seen[2:] == ["GET", "GET", "GET"], "the GET went again on a new connection"
    finally:
        listener.close()

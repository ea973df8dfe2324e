"""A Kubernetes API server double: plain HTTP on 127.0.0.1, state in memory, and a simulated
Deployment controller, so that erni-deploy's Kubernetes path runs against the real `kubernetes`
client and the real kubernetes.core modules where no control plane can run.

Use
- In Python: `with KubeAPIDouble(token, bad_images=[...], slow_images={image: seconds},
  erroring_images={image: n}, ready_delay=0.3, nodes=[...], backends={"[ns/]image": url},
  scrape_targets=path, target_labels={ns: {key: value}}) as api:` then `api.url`, `api.token`,
  `api.write_kubeconfig(path)`, `api.ingress_url(ns, deployment)`, `api.node_port(ns, deployment)`;
  kubernetes.core takes K8S_AUTH_HOST=api.url, K8S_AUTH_API_KEY=api.token and
  K8S_AUTH_VERIFY_SSL=false, or K8S_AUTH_KUBECONFIG.
- Standalone: `python -m tests.k8sapi --port 0 --token T --bad-image IMAGE --slow-image IMAGE=SECONDS
  --erroring-image IMAGE=N --ready-delay SECONDS --node NAME --kubeconfig PATH --backend [NS/]IMAGE=URL
  --node-port NS/DEPLOYMENT=PORT --scrape-targets FILE --target-labels NS=key=value[,key=value]`
  prints its URL as its first line (and `token T` next when it made the token up), then a line
  `node-port NS/DEPLOYMENT PORT` for each --node-port (PORT 0: any free port), and serves until
  SIGTERM. --backend, --node-port and --target-labels may be repeated.

What it simulates
- Authentication: every API request needs `Authorization: Bearer <token>`; anything else is a 401
  Status (reason Unauthorized). Every error is a Kubernetes Status object with the real code and
  reason: 400 BadRequest, 401, 404 NotFound, 405 MethodNotAllowed, 409 AlreadyExists and Conflict,
  415 UnsupportedMediaType, 422 Invalid, 503 ServiceUnavailable (and 500 InternalError should the
  double itself fail).
- Discovery in the legacy format: /version, /api, /api/v1, /apis, /apis/{group},
  /apis/apps/v1 and /apis/policy/v1, which is what the kubernetes client and kubernetes.core ask
  for. A request for aggregated discovery gets the legacy documents, as from a server that does not
  serve aggregated discovery.
- Resources and verbs (discovery lists exactly these):
  apps/v1 Deployments: create, get, list, update (PUT), patch, delete; deployments/scale (get,
  update, patch) and deployments/status (get).
  apps/v1 ReplicaSets: get, list, delete (written by the controller only).
  v1 Pods: create, get, list (in a namespace and across namespaces), delete, pods/eviction and
  pods/log (get).
  v1 Nodes: get, list, update, patch (cordon and uncordon); three Ready nodes by default.
  v1 Namespaces: create, get, list, patch, update, delete (`default` and `kube-system` exist from the
  start).
  v1 Services: create, get, list, update, patch, delete (stored with API defaults; the proxy
  uses their selector), and services/proxy (below).
  policy/v1 PodDisruptionBudgets: get and list, always empty.
- Lists filter by labelSelector (=, ==, !=, in, notin, key, !key) and fieldSelector
  (metadata.name, metadata.namespace, and for pods spec.nodeName and status.phase; =, ==, !=).
- Writes: uid and creationTimestamp on create, resourceVersion on every write (a write that
  changes nothing is not a write), metadata.generation on every spec change, optimistic
  concurrency on metadata.resourceVersion (409 Conflict), dryRun=All, generateName, the API
  defaults of Deployments, pod templates and Services, validation of Deployments and Pods (422;
  the selector of a Deployment is immutable); empty lists and zero counts are left out of what is
  stored, as the API's omitempty fields leave them out.
- PATCH: application/strategic-merge-patch+json (maps merge recursively, null deletes; lists of
  objects merge by their key: containers, initContainers, ephemeralContainers, volumes, env,
  imagePullSecrets by name, volumeMounts by mountPath, container ports by containerPort, Service
  ports by port, conditions by type; `$patch: delete` and `$patch: replace` are honoured, other
  `$` directives ignored; other lists are replaced), application/merge-patch+json (RFC 7386),
  application/json-patch+json (RFC 6902: add, remove, replace, move, copy, test, with ~0 and ~1
  escapes) and application/apply-patch+yaml (server-side apply, applied as a strategic merge,
  creating the object when it does not exist; fieldManager is required, force is accepted).
- The Deployment controller, event by event: a ReplicaSet per pod template, named
  {deployment}-{10-character template hash}, labelled pod-template-hash, owned by its Deployment
  (controller: true); the revision annotation on both, max revision + 1 for a new template, and a
  rollback to an earlier template reuses that ReplicaSet with a new highest revision; the
  Deployment's other annotations (kubernetes.io/change-cause) copied to the new ReplicaSet;
  RollingUpdate with maxSurge and maxUnavailable resolved as Kubernetes resolves them (defaults
  25%/25%, surge rounded up, unavailability rounded down, maxUnavailable 1 when both come to 0),
  and Recreate; minReadySeconds; progressDeadlineSeconds (Progressing=False,
  ProgressDeadlineExceeded); revisionHistoryLimit; status and the Available and Progressing
  conditions with the real reasons and messages (NewReplicaSetCreated, FoundNewReplicaSet,
  ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded, MinimumReplicasAvailable,
  MinimumReplicasUnavailable). The ReplicaSet controller creates and deletes pods; a scheduler
  places pods round-robin on nodes that are not cordoned (a pod with nowhere to go stays Pending);
  garbage collection removes objects whose owners are gone (propagationPolicy Orphan keeps them),
  and controllers adopt the orphans their selector matches.
- Pods: no container runs. A pod is Running once scheduled and Ready `ready_delay` seconds later
  (per-image override: slow images); a pod of a bad image never gets Ready: its container waits in
  CrashLoopBackOff with restartCount rising every `crash_interval` seconds. Image behaviour is
  fixed when a pod is created, except "erroring", which the proxy applies on each request.
- Time is the wall clock, but the controller works event by event (a pod getting Ready or
  available, a progress deadline passing) in time order whenever a request arrives, so the state
  at a given moment does not depend on how often clients poll.
- Eviction (POST .../pods/{name}/eviction, a policy/v1 Eviction) deletes the pod; its ReplicaSet
  replaces it on a schedulable node.
- Pod logs: GET /api/v1/namespaces/{ns}/pods/{name}/log answers text/plain, one line for each thing
  that happened to the container in the simulation, oldest first: the pod scheduled to its node
  (with its pod IP), the image being pulled, the container started, the container Ready, and for a
  bad image one line per crash and restart (exit code 1, CrashLoopBackOff), up to the present; empty
  while the pod is not scheduled. `container` picks the container (400 for one the pod does not
  have, as kube-apiserver answers), and is required (400) when the pod has more than one;
  `sinceSeconds` (>= 1, else 422) keeps the lines of that many seconds back,
  `tailLines` (>= 0) the last N lines, `timestamps=true` puts each line's simulated time in front
  (RFC 3339 with microseconds, UTC), `previous=true` gives the lines up to the last crash (400 for a
  container that never crashed). kubernetes.core.k8s_log works against it, by name or by label
  selector.
- Service proxy: GET or POST /api/v1/namespaces/{ns}/services/{name}[:{port}]/proxy/{path} goes
  to the Ready pods selected by the Service {name} if there is one, else by the Deployment
  {name}, round-robin: /health answers 200 {"status": "ok"}, /api/version 200 {"version": TAG}
  (the tag of the answering pod's first container image without a leading "v"; "latest" when
  untagged), anything else 200 {"path": PATH}; a 503 Status when no pod is Ready. Pods of an
  erroring image answer 500 on every Nth request they get.
- A front door per Deployment, as a LoadBalancer Service or an Ingress would be: any method on
  /_ingress/{ns}/{deployment}/{path} goes, without the API token, to the Ready pods of that
  Deployment, round-robin; for a pod whose image has a backend URL the request (method, path,
  query, headers, body) is forwarded there and the answer returned as is (redirects are handed
  back, not followed; no proxy from the environment is used), so real applications answer for the
  simulated pods; otherwise it answers as the service proxy does. `backends` keys are
  "{namespace}/{image}", tried first, or "{image}", so that staging and production pods of one
  image can stand for different application processes. 503 when no pod is Ready, a 404 Status
  when there is no such Deployment or Service; counted in erni_k8s_proxy_requests_total.
- Node ports, as a NodePort Service per Deployment would be: `node_port(ns, deployment, port=0)`
  opens a port on 127.0.0.1 (once per Deployment; a second call returns the same port) whose every
  request, any method and path, is answered as /_ingress/{ns}/{deployment}/{path} is, without a
  token: HTTP/1.1 with keep-alive and a Content-Length on every answer (chunked request bodies are
  read), so an nginx upstream can point at it. Closed by stop().
- Prometheus service discovery of the pods: with `scrape_targets`, every 0.25 s the simulation is
  brought to the present and a file_sd JSON file is written with one target group per namespace,
  Deployment and backend host:port that a Ready pod of that Deployment (owned through its
  ReplicaSet) uses: {"targets": ["HOST:PORT"], "labels": {"namespace", "deployment", and the
  namespace's `target_labels`}}. Pods whose image has no backend, pods that are not Ready and pods
  no Deployment owns give no target. The file is replaced atomically (a temporary file beside it,
  then a rename) and only when its content changes; it holds [] at start and after stop().
- Endpoints of the double itself, which need no token and are not in the request log:
  GET /metrics: Prometheus text with the counter erni_k8s_proxy_requests_total{namespace,
  deployment, version, code} of proxied requests (version "" for a 503 with no pod to answer);
  GET /_double/requests: the API requests served, as a JSON list of
  {"method", "path", "query", "contentType", "code"}; DELETE /_double/requests empties it;
  GET /_double/images, and POST /_double/images with {"bad": [...], "slow": {image: seconds},
  "erroring": {image: N}}, each key present replacing that setting.

What it does not simulate
- TLS, client certificates, basic auth, RBAC and authorization (a valid token may do anything),
  impersonation, admission webhooks, quotas, audit.
- watch (refused with 405), pagination (limit and continue are ignored; lists are whole), Table
  and PartialObjectMetadata output, protobuf and CBOR, aggregated discovery, OpenAPI documents,
  managedFields and field ownership (server-side apply never conflicts, and fields dropped from
  an applied configuration are not removed), strategic-merge directives other than $patch, other
  API groups and versions, custom resources, Events, exec, attach and port-forward.
- Pod logs are lines about the simulation, not the output of any process (not even a backend's);
  follow=true answers what there is and ends; sinceTime, limitBytes and insecureSkipTLSVerifyBackend
  are ignored.
- Containers, images, probes and networking: readiness is a timer; the proxy's answers are made
  up unless a backend stands for the image; Services have no endpoints objects and a Service's port
  is not checked; node ports are not Service objects (nothing shows in the API) and are on
  127.0.0.1 only.
- Graceful termination: deleted and evicted pods vanish at once (no Terminating state,
  deletionTimestamp or finalizers); namespaces are deleted at once with everything in them;
  Foreground propagation is treated as Background.
- PodDisruptionBudgets (none can be created, so eviction never answers 429), spec.paused (ignored),
  proportional scaling of a rollout in progress (a replica change during a rollout follows the
  rolling-update rules only), status.collisionCount, node creation, deletion, taints and NotReady
  nodes, DaemonSets, StatefulSets and Jobs.
- Persistence: the state lives in memory and is gone when the double stops.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (resource, namespace, name); namespace is "" for cluster-scoped kinds

DEFAULT_NODES = ("node-1", "node-2", "node-3")
REVISION = "deployment.kubernetes.io/revision"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
TEMPLATE_HASH = "pod-template-hash"
# Deployment annotations the controller does not copy to its ReplicaSets, as in Kubernetes.
NOT_COPIED = {REVISION, DESIRED_REPLICAS, MAX_REPLICAS, "deployment.kubernetes.io/revision-history",
              "kubectl.kubernetes.io/last-applied-configuration", "deprecated.deployment.rollback.to"}
NO_DEADLINE = 2**31 - 1
HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
VERSION_INFO = {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "gitCommit": "0" * 40,
                "gitTreeState": "clean", "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5",
                "compiler": "gc", "platform": "linux/amd64"}


# --- errors -------------------------------------------------------------------------------------

class ApiError(Exception):
    """A failure the API answers with a Status object, as kube-apiserver does."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                     "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def no_such_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


# --- small helpers ------------------------------------------------------------------------------

def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(ts: float) -> str:
    """RFC 3339 with microseconds, as the timestamps of pod log lines."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def short_hash(text: str, length: int) -> str:
    """Characters from the alphabet Kubernetes uses for generated names (no vowels, no 0/1/3)."""
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")
    chars = []
    for _ in range(length):
        digest, index = divmod(digest, len(HASH_ALPHABET))
        chars.append(HASH_ALPHABET[index])
    return "".join(chars)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def image_version(image: str) -> str:
    """The tag of an image reference without a leading "v" ("erni-ki:v1.2.0" is "1.2.0")."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else "latest"
    return tag[1:] if tag.startswith("v") and len(tag) > 1 else tag


def dig(obj: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def scaled(value: Any, total: int, round_up: bool) -> int:
    """An int-or-percent scaled to `total` as Kubernetes does (GetScaledValueFromIntOrPercent)."""
    if isinstance(value, int):
        return value
    percent = int(str(value).rstrip("%"))
    return -(-percent * total // 100) if round_up else percent * total // 100


def valid_int_or_percent(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or (
        isinstance(value, str) and re.fullmatch(r"\d+%", value) is not None)


# --- patches ------------------------------------------------------------------------------------

MERGE_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name",
              "volumes": "name", "env": "name", "imagePullSecrets": "name", "volumeMounts": "mountPath",
              "conditions": "type", "hostAliases": "ip", "ownerReferences": "uid"}


def merge_key(field_name: str, items: Sequence[Any]) -> str | None:
    if field_name == "ports":
        return "containerPort" if any(isinstance(i, dict) and "containerPort" in i for i in items) else "port"
    return MERGE_KEYS.get(field_name)


def strategic_merge(original: Any, patch: Any) -> Any:
    """A strategic merge patch over the fields this double knows the patch strategy of."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return strategic_merge({}, {k: v for k, v in patch.items() if k != "$patch"})
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = strategic_merge(result.get(key), value)
        elif isinstance(value, list):
            result[key] = merge_list(key, result.get(key), value)
        else:
            result[key] = value
    return result


def merge_list(field_name: str, original: Any, patch: list[Any]) -> list[Any]:
    def directive(item: Any) -> str | None:
        return item.get("$patch") if isinstance(item, dict) else None

    items = [i for i in patch if directive(i) is None]
    key = merge_key(field_name, [*(original if isinstance(original, list) else []), *patch])
    if any(directive(i) == "replace" for i in patch) or key is None or not isinstance(original, list):
        return [strategic_merge({}, i) if isinstance(i, dict) else i for i in items]
    result = copy.deepcopy(original)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise ApiError(422, "Invalid", f"map in list {field_name} has no merge key {key!r}")
        index = next((n for n, o in enumerate(result) if isinstance(o, dict) and o.get(key) == item[key]), None)
        if directive(item) == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(strategic_merge({}, item))
        else:
            result[index] = strategic_merge(result[index], item)
    return result


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class JsonPatchError(Exception):
    pass


def pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise JsonPatchError(f"invalid JSON pointer {path!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]] if path else []


def list_index(token: str, size: int) -> int:
    if not re.fullmatch(r"0|[1-9][0-9]*", token) or int(token) >= size:
        raise JsonPatchError(f"index {token!r} is out of range")
    return int(token)


def resolve(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[list_index(token, len(doc))]
        else:
            raise JsonPatchError(f"missing path /{'/'.join(tokens)}")
    return doc


def json_add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else list_index(last, len(parent) + 1), value)
    else:
        raise JsonPatchError(f"cannot add to /{'/'.join(tokens)}")
    return doc


def json_remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise JsonPatchError("cannot remove the whole document")
    parent = resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(list_index(last, len(parent)))
    raise JsonPatchError(f"missing path /{'/'.join(tokens)}")


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch; JsonPatchError when an operation does not apply."""
    if not isinstance(operations, list):
        raise bad_request("a JSON patch must be a list of operations")
    result = copy.deepcopy(doc)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation:
            raise bad_request(f"invalid JSON patch operation {operation!r}")
        op, path = operation["op"], pointer(operation.get("path"))
        if op in ("add", "replace", "test") and "value" not in operation:
            raise bad_request(f"JSON patch operation {op} needs a value")
        value = copy.deepcopy(operation.get("value"))
        if op == "add":
            result = json_add(result, path, value)
        elif op == "remove":
            json_remove(result, path)
        elif op == "replace":
            if path:
                json_remove(result, path)
            result = json_add(result, path, value)
        elif op in ("move", "copy"):
            source = pointer(operation.get("from"))
            moved = json_remove(result, source) if op == "move" else copy.deepcopy(resolve(result, source))
            result = json_add(result, path, moved)
        elif op == "test":
            if resolve(result, path) != value:
                raise JsonPatchError(f"test failed at {operation['path']}")
        else:
            raise bad_request(f"unknown JSON patch operation {op!r}")
    return result


# --- selectors ----------------------------------------------------------------------------------

Requirement = tuple[str, str, frozenset[str]]  # (key, operator, values); operators: in notin exists !exists
LABEL_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
LABEL_VALUE = r"[-A-Za-z0-9_.]*"


def split_terms(text: str) -> list[str]:
    """Split on the commas that are not inside an `in (...)` value set."""
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [t.strip() for t in terms if t.strip()]


def parse_label_selector(text: str) -> list[Requirement]:
    requirements: list[Requirement] = []
    for term in split_terms(text):
        if m := re.fullmatch(rf"(!?)\s*({LABEL_KEY})", term):
            requirements.append((m[2], "!exists" if m[1] else "exists", frozenset()))
        elif m := re.fullmatch(rf"({LABEL_KEY})\s*(==|=|!=)\s*({LABEL_VALUE})", term):
            requirements.append((m[1], "notin" if m[2] == "!=" else "in", frozenset([m[3]])))
        elif m := re.fullmatch(rf"({LABEL_KEY})\s+(in|notin)\s+\(([^)]*)\)", term):
            requirements.append((m[1], m[2], frozenset(v.strip() for v in m[3].split(","))))
        else:
            raise bad_request(f"unable to parse requirement: {term!r}")
    return requirements


def selector_requirements(selector: Obj) -> list[Requirement]:
    """The requirements of a LabelSelector object (matchLabels and matchExpressions)."""
    operators = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    requirements = [(k, "in", frozenset([str(v)])) for k, v in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        if not isinstance(expression, dict) or expression.get("operator") not in operators or not expression.get("key"):
            raise bad_request(f"invalid label selector expression {expression!r}")
        requirements.append((expression["key"], operators[expression["operator"]],
                             frozenset(expression.get("values") or [])))
    return requirements


def labels_match(requirements: Iterable[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in requirements:
        present = key in labels
        ok = {"exists": present, "!exists": not present,
              "in": present and labels.get(key) in values,
              "notin": not present or labels.get(key) not in values}[op]
        if not ok:
            return False
    return True


FIELDS = {"pods": ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase")}


def field_filter(resource: str, text: str) -> Callable[[Obj], bool]:
    checks: list[tuple[list[str], bool, str]] = []
    for term in split_terms(text):
        m = re.fullmatch(r"([A-Za-z.]+)\s*(==|=|!=)\s*(.*)", term)
        if not m:
            raise bad_request(f"invalid field selector: {term!r}")
        if m[1] not in FIELDS.get(resource, ("metadata.name", "metadata.namespace")):
            raise bad_request(f'field label not supported: {m[1]}')
        checks.append((m[1].split("."), m[2] != "!=", m[3]))
    return lambda obj: all((str(dig(obj, *path) or "") == value) == equal for path, equal, value in checks)


# --- kinds and discovery ------------------------------------------------------------------------

@dataclass(frozen=True)
class Subresource:
    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    group: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    generation: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"

    @property
    def resource(self) -> str:
        """The resource as the API names it in messages: "deployments.apps", "pods"."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def details(self, name: str) -> Obj:
        return {"name": name, **({"group": self.group} if self.group else {}), "kind": self.plural}

    def not_found(self, name: str) -> ApiError:
        return ApiError(404, "NotFound", f'{self.resource} "{name}" not found', self.details(name))

    def invalid(self, name: str, causes: list[tuple[str, str]]) -> ApiError:
        texts = [f"{path}: {message}" for path, message in causes]
        summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
        reasons = {"Required": "FieldValueRequired", "Duplicate": "FieldValueDuplicate",
                   "Forbidden": "FieldValueForbidden"}
        details = {**self.details(name), "kind": self.kind, "causes": [
            {"reason": reasons.get(message.split(" ", 1)[0], "FieldValueInvalid"), "message": message,
             "field": path} for path, message in causes]}
        return ApiError(422, "Invalid", f'{self.qualified_kind} "{name}" is invalid: {summary}', details)

    def conflict(self, name: str) -> ApiError:
        return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {self.resource} "{name}": the object '
                        "has been modified; please apply your changes to the latest version and try again",
                        self.details(name))


CRUD = ("create", "delete", "get", "list", "patch", "update")
POD = Kind("Pod", "pods", "", True, ("create", "delete", "get", "list"), ("po",),
           (Subresource("eviction", "Eviction", ("create",), "policy", "v1"), Subresource("log", "Pod", ("get",))))
NODE = Kind("Node", "nodes", "", False, ("get", "list", "patch", "update"), ("no",))
NAMESPACE = Kind("Namespace", "namespaces", "", False, ("create", "delete", "get", "list", "patch", "update"), ("ns",))
SERVICE = Kind("Service", "services", "", True, CRUD, ("svc",),
               (Subresource("proxy", "ServiceProxyOptions", ("create", "get")),))
DEPLOYMENT = Kind("Deployment", "deployments", "apps", True, CRUD, ("deploy",),
                  (Subresource("scale", "Scale", ("get", "patch", "update"), "autoscaling", "v1"),
                   Subresource("status", "Deployment", ("get",))), generation=True)
REPLICASET = Kind("ReplicaSet", "replicasets", "apps", True, ("delete", "get", "list"), ("rs",), generation=True)
PDB = Kind("PodDisruptionBudget", "poddisruptionbudgets", "policy", True, ("get", "list"), ("pdb",))
KINDS = (POD, NODE, NAMESPACE, SERVICE, DEPLOYMENT, REPLICASET, PDB)
BY_PATH = {(k.group, k.plural): k for k in KINDS}
GROUPS = ("apps", "policy")


def typed_copy(kind: Kind, body: Any) -> Obj:
    """A copy of a request body that must be a `kind` object, with its kind and apiVersion set."""
    if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
        raise bad_request(f"the body must be a {kind.kind} object")
    if body.get("kind") not in (None, kind.kind) or body.get("apiVersion") not in (None, kind.api_version):
        raise bad_request(f"the body is a {body.get('apiVersion')} {body.get('kind')}, not a "
                          f"{kind.api_version} {kind.kind}")
    obj: Obj = copy.deepcopy(body)
    obj["kind"], obj["apiVersion"] = kind.kind, kind.api_version
    return obj


def resource_list(group: str) -> Obj:
    resources = []
    for kind in (k for k in KINDS if k.group == group):
        resources.append({"name": kind.plural, "singularName": kind.kind.lower(), "namespaced": kind.namespaced,
                          "kind": kind.kind, "verbs": list(kind.verbs), "shortNames": list(kind.short_names)})
        for sub in kind.subresources:
            resources.append({"name": f"{kind.plural}/{sub.name}", "singularName": "", "namespaced": kind.namespaced,
                              **({"group": sub.group, "version": sub.version} if sub.group else {}),
                              "kind": sub.kind, "verbs": list(sub.verbs)})
    group_version = f"{group}/v1" if group else "v1"
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


def api_group(name: str) -> Obj:
    version = {"groupVersion": f"{name}/v1", "version": "v1"}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": [version], "preferredVersion": version}


def api_group_list() -> Obj:
    groups = [{k: v for k, v in api_group(name).items() if k not in ("kind", "apiVersion")} for name in GROUPS]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


# --- defaults and validation --------------------------------------------------------------------

def drop_empty_lists(value: Any) -> Any:
    """Leave out empty lists, as the API's omitempty list fields do when it writes an object."""
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v == []]:
            del value[key]
        for item in value.values():
            drop_empty_lists(item)
    elif isinstance(value, list):
        for item in value:
            drop_empty_lists(item)
    return value


def default_pod_spec(spec: Obj) -> None:
    """The defaults kube-apiserver gives a pod spec, so that templates compare as the API stores them."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if not isinstance(container, dict):
            continue
        image = str(container.get("image", ""))
        untagged = "@" not in image and ":" not in image.rsplit("/", 1)[-1]
        container.setdefault("imagePullPolicy", "Always" if untagged or image.endswith(":latest") else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")


def default_deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxSurge", "25%")
        rolling.setdefault("maxUnavailable", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    if spec.get("paused") is False:
        del spec["paused"]
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    default_pod_spec(template.setdefault("spec", {}))


def default_service(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
        place = hashlib.sha256(f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}".encode()).digest()
        spec["clusterIP"] = f"10.96.{place[0]}.{place[1] % 253 + 2}"
    if spec.get("clusterIP") and not spec.get("clusterIPs"):
        spec["clusterIPs"] = [spec["clusterIP"]]
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    obj.setdefault("status", {"loadBalancer": {}})


def default_namespace(obj: Obj) -> None:
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    obj.setdefault("spec", {"finalizers": ["kubernetes"]})
    obj["status"] = {"phase": "Active"}


def default_node(obj: Obj) -> None:
    if not dig(obj, "spec", "unschedulable"):
        obj.setdefault("spec", {}).pop("unschedulable", None)


def default_pod(obj: Obj) -> None:
    default_pod_spec(obj.setdefault("spec", {}))


DEFAULTS: dict[str, Callable[[Obj], None]] = {
    "Deployment": default_deployment, "Service": default_service, "Namespace": default_namespace,
    "Node": default_node, "Pod": default_pod}


def container_errors(spec: Any, prefix: str) -> list[tuple[str, str]]:
    containers = spec.get("containers") if isinstance(spec, dict) else None
    if not containers or not isinstance(containers, list):
        return [(f"{prefix}.containers", "Required value")]
    errors, seen = [], set()
    for i, container in enumerate(containers):
        where = f"{prefix}.containers[{i}]"
        if not isinstance(container, dict) or not container.get("name"):
            errors.append((f"{where}.name", "Required value"))
            continue
        if container["name"] in seen:
            errors.append((f"{where}.name", f'Duplicate value: "{container["name"]}"'))
        seen.add(container["name"])
        if not container.get("image"):
            errors.append((f"{where}.image", "Required value"))
    return errors


def strategy_errors(spec: Obj) -> list[tuple[str, str]]:
    strategy = spec.get("strategy") or {}
    kind = strategy.get("type")
    if kind == "Recreate":
        return [("spec.strategy.rollingUpdate", "Forbidden: may not be specified when strategy `type` is "
                 "'Recreate'")] if strategy.get("rollingUpdate") else []
    if kind != "RollingUpdate":
        return [("spec.strategy.type", f'Unsupported value: "{kind}": supported values: "Recreate", "RollingUpdate"')]
    rolling = strategy.get("rollingUpdate") or {}
    errors = []
    for name in ("maxSurge", "maxUnavailable"):
        if not valid_int_or_percent(rolling.get(name)):
            errors.append((f"spec.strategy.rollingUpdate.{name}",
                           f"Invalid value: {json.dumps(rolling.get(name))}: must be an integer or a percentage"))
    if errors:
        return errors
    if scaled(rolling["maxSurge"], 100, True) == 0 and scaled(rolling["maxUnavailable"], 100, False) == 0:
        errors.append(("spec.strategy.rollingUpdate.maxUnavailable",
                       "Invalid value: 0: may not be 0 when `maxSurge` is 0"))
    if isinstance(rolling["maxUnavailable"], str) and scaled(rolling["maxUnavailable"], 100, False) > 100:
        errors.append(("spec.strategy.rollingUpdate.maxUnavailable",
                       f'Invalid value: "{rolling["maxUnavailable"]}": must not be greater than 100%'))
    return errors


def validate_deployment(obj: Obj, old: Obj | None) -> list[tuple[str, str]]:
    spec = obj.get("spec") or {}
    errors: list[tuple[str, str]] = []
    selector = spec.get("selector")
    labels = dig(spec, "template", "metadata", "labels") or {}
    if not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        errors.append(("spec.selector", "Required value"))
    elif not labels_match(selector_requirements(selector), labels):
        errors.append(("spec.template.metadata.labels",
                       f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`"))
    if old is not None and selector != dig(old, "spec", "selector"):
        errors.append(("spec.selector", f"Invalid value: {json.dumps(selector)}: field is immutable"))
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        errors.append(("spec.replicas", f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0"))
    errors += strategy_errors(spec)
    errors += container_errors(dig(spec, "template", "spec"), "spec.template.spec")
    deadline, min_ready = spec.get("progressDeadlineSeconds"), spec.get("minReadySeconds", 0)
    if not isinstance(deadline, int) or not isinstance(min_ready, int) or deadline <= min_ready:
        errors.append(("spec.progressDeadlineSeconds",
                       f"Invalid value: {json.dumps(deadline)}: must be greater than minReadySeconds"))
    return errors


def validate_pod(obj: Obj, old: Obj | None) -> list[tuple[str, str]]:
    return container_errors(obj.get("spec"), "spec")


VALIDATORS: dict[str, Callable[[Obj, Obj | None], list[tuple[str, str]]]] = {
    "Deployment": validate_deployment, "Pod": validate_pod}


def fenceposts(deployment: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved as Kubernetes' ResolveFenceposts resolves them."""
    replicas = deployment["spec"]["replicas"]
    rolling = dig(deployment, "spec", "strategy", "rollingUpdate") or {}
    surge = scaled(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = scaled(rolling.get("maxUnavailable", "25%"), replicas, False)
    return (surge, 1) if surge == 0 and unavailable == 0 else (surge, unavailable)


def recreate(deployment: Obj) -> bool:
    return dig(deployment, "spec", "strategy", "type") == "Recreate"


def max_unavailable(deployment: Obj) -> int:
    if recreate(deployment):
        return 0
    return min(fenceposts(deployment)[1], deployment["spec"]["replicas"])


def without_hash(template: Obj) -> str:
    stripped = copy.deepcopy(template)
    labels = dig(stripped, "metadata", "labels")
    if isinstance(labels, dict):
        labels.pop(TEMPLATE_HASH, None)
    return canonical(stripped)


def set_condition(conditions: list[Obj], condition: Obj) -> list[Obj]:
    """Kubernetes' SetDeploymentCondition: same status and reason is no change; same status keeps
    the transition time; a changed condition moves to the end."""
    current = next((c for c in conditions if c["type"] == condition["type"]), None)
    if current and current["status"] == condition["status"] and current["reason"] == condition["reason"]:
        return conditions
    if current and current["status"] == condition["status"]:
        condition = {**condition, "lastTransitionTime": current["lastTransitionTime"]}
    return [c for c in conditions if c["type"] != condition["type"]] + [condition]


def condition(kind: str, ok: bool, reason: str, message: str, t: float) -> Obj:
    return {"type": kind, "status": "True" if ok else "False", "lastUpdateTime": rfc3339(t),
            "lastTransitionTime": rfc3339(t), "reason": reason, "message": message}


def progressing_condition(status: Obj) -> Obj | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == "Progressing"), None)


def owner_reference(owner: Obj) -> Obj:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def controller_uid(obj: Obj) -> str | None:
    return next((ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or [] if ref.get("controller")),
                None)


# --- the cluster --------------------------------------------------------------------------------

@dataclass
class ImageBehaviour:
    """How the simulated containers of an image behave: never Ready, Ready late, or erroring."""

    bad: set[str] = field(default_factory=set)
    slow: dict[str, float] = field(default_factory=dict)
    erroring: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> Obj:
        return {"bad": sorted(self.bad), "slow": dict(self.slow), "erroring": dict(self.erroring)}

    def update(self, body: Any) -> None:
        """Replace the settings given in body; ValueError when one is malformed."""
        if not isinstance(body, dict) or set(body) - {"bad", "slow", "erroring"}:
            raise ValueError('expected an object with the keys "bad", "slow" and "erroring" only')
        bad = body.get("bad", sorted(self.bad))
        slow = body.get("slow", self.slow)
        erroring = body.get("erroring", self.erroring)
        if not isinstance(bad, list) or not all(isinstance(i, str) for i in bad):
            raise ValueError('"bad" must be a list of images')
        if not isinstance(slow, dict) or not all(isinstance(v, int | float) and v >= 0 for v in slow.values()):
            raise ValueError('"slow" must map images to seconds')
        if not isinstance(erroring, dict) or not all(isinstance(v, int) and v >= 1 for v in erroring.values()):
            raise ValueError('"erroring" must map images to a whole number N >= 1 (every Nth request fails)')
        self.bad, self.slow, self.erroring = set(bad), {k: float(v) for k, v in slow.items()}, dict(erroring)


@dataclass
class PodSim:
    """What the double decides about a pod's containers, kept outside the API object."""

    born: float
    bad: frozenset[str]  # the pod's images that were bad when it was created
    delay: float
    min_ready: float
    scheduled_at: float | None = None
    ip: str = ""

    @property
    def crashing(self) -> bool:
        return bool(self.bad)

    @property
    def ready_at(self) -> float | None:
        return None if self.crashing or self.scheduled_at is None else self.scheduled_at + self.delay

    def ready(self, t: float) -> bool:
        return self.ready_at is not None and t >= self.ready_at

    def available(self, t: float) -> bool:
        return self.ready_at is not None and t >= self.ready_at + self.min_ready


class Cluster:
    """The API's objects and the controllers acting on them. Every public method takes the lock and
    first brings the simulation up to the present."""

    def __init__(self, *, nodes: Sequence[str] = DEFAULT_NODES, images: ImageBehaviour | None = None,
                 ready_delay: float = 0.3, crash_interval: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.images = images or ImageBehaviour()
        self.ready_delay = ready_delay
        self.crash_interval = crash_interval
        self._clock = clock
        self._lock = threading.RLock()
        self._objects: dict[Key, Obj] = {}
        self._sims: dict[str, PodSim] = {}       # by pod uid
        self._order: dict[str, int] = {}         # creation order by uid, finer than creationTimestamp
        self._progress_at: dict[str, float] = {}  # when each Deployment (by uid) last made progress
        self._rv = 0
        self._now = clock()
        self._cursor = 0
        self._names = 0
        self._ips = 0
        self._node_index = {name: i for i, name in enumerate(nodes)}
        self._proxy_cursor: Counter[tuple[str, str]] = Counter()
        self._image_hits: Counter[tuple[str, str, str]] = Counter()
        self.proxy_counts: Counter[tuple[str, str, str, str]] = Counter()
        for namespace in ("default", "kube-system"):
            self._seed(NAMESPACE, {"metadata": {"name": namespace}})
        for name in nodes:
            self._seed(NODE, self._node(name))

    # -- plumbing --

    @contextmanager
    def _present(self) -> Iterator[float]:
        with self._lock:
            now = max(self._clock(), self._now)
            self._advance(now)
            yield now

    def _seed(self, kind: Kind, body: Obj) -> None:
        obj = self._new_object(kind, "", body, self._now)
        self._put(kind, obj)

    def _key(self, kind: Kind, namespace: str | None, name: str) -> Key:
        return kind.plural, namespace or "", name

    def _put(self, kind: Kind, obj: Obj) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[self._key(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"])] = obj
        return copy.deepcopy(obj)

    def _require(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        obj = self._objects.get(self._key(kind, namespace, name))
        if obj is None:
            raise kind.not_found(name)
        return obj

    def _all(self, kind: Kind, namespace: str | None = None) -> list[Obj]:
        return [o for (plural, ns, _), o in sorted(self._objects.items())
                if plural == kind.plural and (namespace is None or ns == namespace)]

    def _generated_name(self, prefix: str, namespace: str, kind: Kind) -> str:
        while True:
            self._names += 1
            name = prefix + short_hash(f"{prefix}/{self._names}", 5)
            if self._key(kind, namespace, name) not in self._objects:
                return name

    def _node(self, name: str) -> Obj:
        index = self._node_index[name]
        since = rfc3339(self._now)
        return {"metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
                "spec": {"podCIDR": f"10.244.{index + 1}.0/24", "podCIDRs": [f"10.244.{index + 1}.0/24"]},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                    "message": "kubelet is posting ready status", "lastHeartbeatTime": since,
                                    "lastTransitionTime": since}],
                    "addresses": [{"type": "InternalIP", "address": f"10.0.0.{10 + index}"},
                                  {"type": "Hostname", "address": name}],
                    "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "containerd://1.7.0",
                                 "kernelVersion": "6.1.0", "kubeProxyVersion": "v1.31.0", "kubeletVersion": "v1.31.0",
                                 "machineID": "", "operatingSystem": "linux", "osImage": "erni-deploy API double",
                                 "systemUUID": ""}}}

    # -- the API's verbs --

    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        with self._present():
            return copy.deepcopy(self._require(kind, namespace, name))

    def list_objects(self, kind: Kind, namespace: str | None, label_selector: str = "",
                     field_selector: str = "") -> Obj:
        with self._present():
            requirements = parse_label_selector(label_selector)
            fields = field_filter(kind.plural, field_selector)
            items = []
            for obj in self._all(kind, namespace):
                if labels_match(requirements, obj["metadata"].get("labels")) and fields(obj):
                    items.append({k: v for k, v in copy.deepcopy(obj).items() if k not in ("kind", "apiVersion")})
            return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                    "metadata": {"resourceVersion": str(self._rv)}, "items": items}

    def create(self, kind: Kind, namespace: str | None, body: Any, *, dry_run: bool = False) -> Obj:
        with self._present() as now:
            return self._create(kind, namespace, body, now, dry_run)

    def replace(self, kind: Kind, namespace: str | None, name: str, body: Any, *, dry_run: bool = False) -> Obj:
        with self._present() as now:
            old = self._require(kind, namespace, name)
            return self._update(kind, old, body, now, dry_run)

    def patch(self, kind: Kind, namespace: str | None, name: str, content_type: str, raw: bytes, *,
              dry_run: bool = False, field_manager: str | None = None) -> tuple[int, Obj]:
        """(201, created) when an apply creates the object, else (200, patched)."""
        patch = decode_patch(content_type, raw)
        with self._present() as now:
            current = self._objects.get(self._key(kind, namespace, name))
            if content_type == "application/apply-patch+yaml":
                if not field_manager:
                    raise ApiError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required '
                                   "value: is required for apply patch")
                if not isinstance(patch, dict) or dig(patch, "metadata", "name") not in (None, name):
                    raise bad_request(f"the name of the object does not match the name on the URL ({name})")
                if current is None:
                    body = {**patch, "metadata": {**(patch.get("metadata") or {}), "name": name}}
                    return 201, self._create(kind, namespace, body, now, dry_run)
                return 200, self._update(kind, current, strategic_merge(current, patch), now, dry_run)
            if current is None:
                raise kind.not_found(name)
            return 200, self._update(kind, current, apply_patch(content_type, current, patch), now, dry_run)

    def delete(self, kind: Kind, namespace: str | None, name: str, options: Obj) -> Obj:
        with self._present() as now:
            obj = self._require(kind, namespace, name)
            preconditions = options.get("preconditions") or {}
            for field_name in ("uid", "resourceVersion"):
                if preconditions.get(field_name) not in (None, obj["metadata"][field_name]):
                    raise kind.conflict(name)
            if options.get("dryRun") != ["All"]:
                self._remove(kind, obj, orphan=options.get("propagationPolicy") == "Orphan")
                self._reconcile(now)
            if kind is POD:
                return copy.deepcopy(obj)
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {**kind.details(name), "uid": obj["metadata"]["uid"]}}

    def evict(self, namespace: str, name: str, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the body must be a policy/v1 Eviction")
        if dig(body, "metadata", "name") not in (None, name):
            raise bad_request("name in URL does not match name in Eviction object")
        with self._present() as now:
            pod = self._require(POD, namespace, name)
            if dig(body, "deleteOptions", "dryRun") != ["All"]:
                self._remove(POD, pod, orphan=False)
                self._reconcile(now)
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def scale(self, namespace: str, name: str) -> Obj:
        with self._present():
            return self._scale_view(self._require(DEPLOYMENT, namespace, name))

    def update_scale(self, namespace: str, name: str, content_type: str | None, raw: bytes, *,
                     dry_run: bool = False) -> Obj:
        """PUT (content_type None) or PATCH of deployments/scale: only spec.replicas is taken."""
        with self._present() as now:
            deployment = self._require(DEPLOYMENT, namespace, name)
            view = self._scale_view(deployment)
            body = decode_json(raw) if content_type is None else apply_patch(content_type, view,
                                                                          decode_patch(content_type, raw))
            replicas = dig(body, "spec", "replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise DEPLOYMENT.invalid(name, [("spec.replicas", f"Invalid value: {json.dumps(replicas)}: must be "
                                                 "greater than or equal to 0")])
            updated = self._update(DEPLOYMENT, deployment, strategic_merge(deployment, {"spec": {
                "replicas": replicas}}), now, dry_run)
            return {**self._scale_view(updated), "spec": {"replicas": replicas}}

    def _scale_view(self, deployment: Obj) -> Obj:
        meta = deployment["metadata"]
        selector = ",".join(f"{k}={v}" for k, v in (dig(deployment, "spec", "selector", "matchLabels") or {}).items())
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
                "spec": {"replicas": deployment["spec"]["replicas"]},
                "status": {"replicas": dig(deployment, "status", "replicas") or 0, "selector": selector}}

    # -- writes --

    def _new_object(self, kind: Kind, namespace: str | None, body: Any, now: float) -> Obj:
        obj = typed_copy(kind, body)
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            if meta.get("namespace") not in (None, namespace):
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  "request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._generated_name(meta["generateName"], namespace or "", kind)
        if not meta.get("name"):
            raise kind.invalid("", [("metadata.name", "Required value: name or generateName is required")])
        if not DNS_SUBDOMAIN.fullmatch(meta["name"]) or len(meta["name"]) > 253:
            raise kind.invalid(meta["name"], [("metadata.name", f'Invalid value: "{meta["name"]}": a lowercase RFC '
                                               "1123 subdomain must consist of lower case alphanumeric characters, "
                                               "'-' or '.', and must start and end with an alphanumeric character")])
        for transient in ("resourceVersion", "deletionTimestamp", "managedFields", "selfLink"):
            meta.pop(transient, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=rfc3339(now))
        if kind.generation:
            meta["generation"] = 1
        if kind in (DEPLOYMENT, POD, REPLICASET):
            obj["status"] = {}
        DEFAULTS.get(kind.kind, lambda _: None)(obj)
        return drop_empty_lists(obj)

    def _create(self, kind: Kind, namespace: str | None, body: Any, now: float, dry_run: bool) -> Obj:
        obj = self._new_object(kind, namespace, body, now)
        name = obj["metadata"]["name"]
        if kind.namespaced and self._key(NAMESPACE, None, namespace or "") not in self._objects:
            raise NAMESPACE.not_found(namespace or "")
        if self._key(kind, namespace, name) in self._objects:
            raise ApiError(409, "AlreadyExists", f'{kind.resource} "{name}" already exists', kind.details(name))
        errors = VALIDATORS.get(kind.kind, lambda _o, _p: [])(obj, None)
        if errors:
            raise kind.invalid(name, errors)
        if dry_run:
            return obj
        if kind is POD:
            self._register_pod(obj, now)
        self._order[obj["metadata"]["uid"]] = self._rv
        written = self._put(kind, obj)
        self._reconcile(now)
        return written

    def _update(self, kind: Kind, old: Obj, body: Any, now: float, dry_run: bool) -> Obj:
        name = old["metadata"]["name"]
        new = typed_copy(kind, body)
        meta = new.setdefault("metadata", {})
        if meta.get("name") not in (None, name):
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if meta.get("namespace") not in (None, old["metadata"].get("namespace")):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if meta.get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
            raise kind.conflict(name)
        for kept in ("name", "namespace", "uid", "creationTimestamp", "generation", "resourceVersion"):
            if kept in old["metadata"]:
                meta[kept] = old["metadata"][kept]
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        DEFAULTS.get(kind.kind, lambda _: None)(new)
        drop_empty_lists(new)
        errors = VALIDATORS.get(kind.kind, lambda _o, _p: [])(new, old)
        if errors:
            raise kind.invalid(name, errors)
        if kind.generation and new.get("spec") != old.get("spec"):
            meta["generation"] = old["metadata"].get("generation", 0) + 1
        if new == old or dry_run:
            return copy.deepcopy(new)
        written = self._put(kind, new)
        self._reconcile(now)
        return written

    def _remove(self, kind: Kind, obj: Obj, orphan: bool) -> None:
        meta = obj["metadata"]
        del self._objects[self._key(kind, meta.get("namespace"), meta["name"])]
        self._sims.pop(meta["uid"], None)
        if kind is NAMESPACE:
            for key in [k for k in self._objects if k[1] == meta["name"]]:
                self._sims.pop(self._objects.pop(key)["metadata"]["uid"], None)
        if orphan:
            for key, dependant in list(self._objects.items()):
                refs = dependant["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == meta["uid"] for ref in refs):
                    draft = copy.deepcopy(dependant)
                    draft["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != meta["uid"]]
                    self._put(BY_PATH[(draft["apiVersion"].rpartition("/")[0], key[0])], draft)

    # -- the controllers --

    def _events(self) -> Iterator[float]:
        """The moments at which something changes without a request: pods getting Ready and
        available, progress deadlines passing."""
        for sim in self._sims.values():
            if sim.ready_at is not None:
                yield sim.ready_at
                yield sim.ready_at + sim.min_ready
        for deployment in self._all(DEPLOYMENT):
            deadline = deployment["spec"].get("progressDeadlineSeconds")
            current = progressing_condition(deployment.get("status") or {})
            if deadline not in (None, NO_DEADLINE) and current and \
                    current["reason"] not in ("NewReplicaSetAvailable", "ProgressDeadlineExceeded"):
                yield self._last_progress(deployment, current) + deadline

    def _last_progress(self, deployment: Obj, current: Obj) -> float:
        """When the Deployment last progressed: exact if this double saw it, else its lastUpdateTime."""
        exact = self._progress_at.get(deployment["metadata"]["uid"])
        if exact is not None:
            return exact
        return datetime.strptime(current["lastUpdateTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()

    def _advance(self, now: float) -> None:
        while True:
            due = [t for t in self._events() if self._now < t <= now]
            if not due:
                break
            self._reconcile(min(due))
        self._reconcile(now)

    def _reconcile(self, t: float) -> None:
        """Run every controller until nothing changes, at simulated time t."""
        self._now = t
        for _ in range(200):
            results = [self._collect_garbage(),
                       *[self._sync_deployment(d, t) for d in self._all(DEPLOYMENT)],
                       *[self._sync_replicaset(rs, t) for rs in self._all(REPLICASET)],
                       self._schedule(t),
                       *[self._sync_pod_status(p, t) for p in self._all(POD)]]
            if not any(results):
                return
        raise RuntimeError("the simulated controllers did not settle")

    def _collect_garbage(self) -> bool:
        uids = {o["metadata"]["uid"] for o in self._objects.values()}
        changed = False
        for kind in (REPLICASET, POD):
            for obj in self._all(kind):
                refs = obj["metadata"].get("ownerReferences") or []
                if refs and not any(ref.get("uid") in uids for ref in refs):
                    self._remove(kind, obj, orphan=False)
                    changed = True
        return changed

    def _adopt(self, kind: Kind, owner: Obj) -> bool:
        """Take over the objects its selector matches that have no controller, as Kubernetes'
        controllers claim orphans (a Deployment its ReplicaSets, a ReplicaSet its pods)."""
        requirements = selector_requirements(owner["spec"]["selector"])
        adopted = False
        for obj in self._all(kind, owner["metadata"]["namespace"]):
            if controller_uid(obj) is None and labels_match(requirements, obj["metadata"].get("labels")):
                draft = copy.deepcopy(obj)
                draft["metadata"]["ownerReferences"] = [*(obj["metadata"].get("ownerReferences") or []),
                                                        owner_reference(owner)]
                if kind is POD:
                    self._sims[obj["metadata"]["uid"]].min_ready = float(owner["spec"].get("minReadySeconds", 0))
                self._put(kind, draft)
                adopted = True
        return adopted

    def _owned(self, kind: Kind, owner: Obj) -> list[Obj]:
        uid = owner["metadata"]["uid"]
        owned = [o for o in self._all(kind, owner["metadata"]["namespace"]) if controller_uid(o) == uid]
        return sorted(owned, key=lambda o: self._order.get(o["metadata"]["uid"], 0))

    def _fresh(self, kind: Kind, obj: Obj) -> Obj:
        return self._objects[self._key(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"])]

    def _sync_deployment(self, stored: Obj, t: float) -> bool:
        adopted = self._adopt(REPLICASET, stored)
        deployment = copy.deepcopy(stored)
        replicasets = self._owned(REPLICASET, deployment)
        template = without_hash(deployment["spec"]["template"])
        new = next((rs for rs in replicasets if without_hash(rs["spec"]["template"]) == template), None)
        olds = [rs for rs in replicasets if rs is not new]
        if new is None:
            new_name = self._create_replicaset(deployment, olds, t)
            self._note_progress(deployment, t, "NewReplicaSetCreated", f'Created new replica set "{new_name}"')
            changed = True
        else:
            new_name = new["metadata"]["name"]
            changed = self._sync_new_replicaset(deployment, new, olds) or adopted
            if progressing_condition(deployment.get("status") or {}) is None:
                self._note_progress(deployment, t, "FoundNewReplicaSet", f'Found new replica set "{new_name}"')
        new_rs = self._require(REPLICASET, deployment["metadata"]["namespace"], new_name)
        annotations = deployment["metadata"].setdefault("annotations", {})
        annotations[REVISION] = new_rs["metadata"]["annotations"][REVISION]
        olds = [self._fresh(REPLICASET, rs) for rs in olds]
        rollout = self._rollout_recreate if recreate(deployment) else self._rollout_rolling
        changed = rollout(deployment, new_rs, olds) or changed
        new_rs, olds = self._fresh(REPLICASET, new_rs), [self._fresh(REPLICASET, rs) for rs in olds]
        deployment["status"] = self._deployment_status(deployment, new_rs, olds, t)
        if self._complete(deployment, deployment["status"]):
            changed = self._clean_history(deployment, olds) or changed
        if deployment != stored:
            self._put(DEPLOYMENT, deployment)
            changed = True
        return changed

    def _note_progress(self, deployment: Obj, t: float, reason: str, message: str) -> None:
        status = deployment.setdefault("status", {})
        status["conditions"] = set_condition(status.get("conditions") or [],
                                             condition("Progressing", True, reason, message, t))
        self._progress_at[deployment["metadata"]["uid"]] = t

    def _copied_annotations(self, deployment: Obj) -> Obj:
        annotations = deployment["metadata"].get("annotations") or {}
        return {k: v for k, v in annotations.items() if k not in NOT_COPIED}

    def _create_replicaset(self, deployment: Obj, olds: list[Obj], t: float) -> str:
        meta, spec = deployment["metadata"], deployment["spec"]
        template = copy.deepcopy(spec["template"])
        pod_hash = short_hash(without_hash(template), 10)
        template["metadata"].setdefault("labels", {})[TEMPLATE_HASH] = pod_hash
        selector = copy.deepcopy(spec["selector"])
        selector.setdefault("matchLabels", {})[TEMPLATE_HASH] = pod_hash
        name = f"{meta['name']}-{pod_hash}"
        revision = max((int(rs["metadata"]["annotations"].get(REVISION, 0)) for rs in olds), default=0) + 1
        replicas = self._initial_replicas(deployment, olds)
        annotations = {**self._copied_annotations(deployment), REVISION: str(revision),
                       **self._replica_annotations(deployment)}
        rs: Obj = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": meta["namespace"], "labels": dict(template["metadata"]["labels"]),
                         "annotations": annotations, "ownerReferences": [owner_reference(deployment)],
                         "uid": str(uuid.uuid4()), "creationTimestamp": rfc3339(t), "generation": 1},
            "spec": {"replicas": replicas, "minReadySeconds": spec.get("minReadySeconds", 0),
                     "selector": selector, "template": template},
            "status": {"replicas": 0}}
        self._order[rs["metadata"]["uid"]] = self._rv
        self._put(REPLICASET, rs)
        return name

    def _replica_annotations(self, deployment: Obj) -> Obj:
        replicas = deployment["spec"]["replicas"]
        surge = 0 if recreate(deployment) else fenceposts(deployment)[0]
        return {DESIRED_REPLICAS: str(replicas), MAX_REPLICAS: str(replicas + surge)}

    def _initial_replicas(self, deployment: Obj, olds: list[Obj]) -> int:
        old_total = sum(rs["spec"]["replicas"] for rs in olds)
        if recreate(deployment):
            return 0 if old_total or any(self._owned(POD, rs) for rs in olds) else deployment["spec"]["replicas"]
        return self._rolling_target(deployment, 0, old_total)

    def _sync_new_replicaset(self, deployment: Obj, new: Obj, olds: list[Obj]) -> bool:
        """Kubernetes' treatment of an existing new ReplicaSet: the next revision when it is older
        than another (a rollback), the Deployment's annotations, its minReadySeconds."""
        draft = copy.deepcopy(new)
        annotations = draft["metadata"].setdefault("annotations", {})
        revision = max((int(rs["metadata"]["annotations"].get(REVISION, 0)) for rs in olds), default=0) + 1
        if int(annotations.get(REVISION, 0)) < revision:
            annotations[REVISION] = str(revision)
        annotations.update(self._copied_annotations(deployment))
        draft["spec"]["minReadySeconds"] = deployment["spec"].get("minReadySeconds", 0)
        if draft == new:
            return False
        self._put(REPLICASET, draft)
        return True

    def _scale(self, rs: Obj, replicas: int, deployment: Obj) -> bool:
        rs = self._fresh(REPLICASET, rs)
        if rs["spec"]["replicas"] == replicas:
            return False
        draft = copy.deepcopy(rs)
        draft["spec"]["replicas"] = replicas
        draft["metadata"]["generation"] += 1
        draft["metadata"].setdefault("annotations", {}).update(self._replica_annotations(deployment))
        self._put(REPLICASET, draft)
        return True

    def _rolling_target(self, deployment: Obj, new_count: int, total: int) -> int:
        """Kubernetes' NewRSNewReplicas for RollingUpdate: grow the new ReplicaSet within maxSurge."""
        replicas = deployment["spec"]["replicas"]
        if new_count >= replicas:
            return replicas
        ceiling = replicas + fenceposts(deployment)[0]
        return new_count if total >= ceiling else new_count + min(ceiling - total, replicas - new_count)

    def _rollout_rolling(self, deployment: Obj, new: Obj, olds: list[Obj]) -> bool:
        """Kubernetes' rolloutRolling: reconcileNewReplicaSet, then reconcileOldReplicaSets."""
        total = sum(rs["spec"]["replicas"] for rs in [new, *olds])
        changed = self._scale(new, self._rolling_target(deployment, new["spec"]["replicas"], total), deployment)
        new, olds = self._fresh(REPLICASET, new), [self._fresh(REPLICASET, rs) for rs in olds]
        if not sum(rs["spec"]["replicas"] for rs in olds):
            return changed
        min_available = deployment["spec"]["replicas"] - fenceposts(deployment)[1]
        new_unavailable = new["spec"]["replicas"] - (new["status"].get("availableReplicas") or 0)
        budget = sum(rs["spec"]["replicas"] for rs in [new, *olds]) - min_available - new_unavailable
        if budget <= 0:
            return changed
        for rs in olds:  # cleanupUnhealthyReplicas: unavailable old pods go first
            unhealthy = rs["spec"]["replicas"] - (rs["status"].get("availableReplicas") or 0)
            down = min(budget, unhealthy)
            if down > 0:
                changed = self._scale(rs, rs["spec"]["replicas"] - down, deployment) or changed
                budget -= down
        available = sum(rs["status"].get("availableReplicas") or 0 for rs in [new, *olds])
        excess = available - min_available
        for rs in (self._fresh(REPLICASET, rs) for rs in olds):  # scaleDownOldReplicaSetsForRollingUpdate
            down = min(rs["spec"]["replicas"], excess)
            if down > 0:
                changed = self._scale(rs, rs["spec"]["replicas"] - down, deployment) or changed
                excess -= down
        return changed

    def _rollout_recreate(self, deployment: Obj, new: Obj, olds: list[Obj]) -> bool:
        changed = False
        for rs in olds:
            changed = self._scale(rs, 0, deployment) or changed
        if changed or any(self._owned(POD, rs) for rs in olds):
            return changed
        return self._scale(new, deployment["spec"]["replicas"], deployment)

    def _clean_history(self, deployment: Obj, olds: list[Obj]) -> bool:
        limit = deployment["spec"].get("revisionHistoryLimit", 10)
        idle = [rs for rs in olds if rs["spec"]["replicas"] == 0 and not rs["status"].get("replicas")]
        idle.sort(key=lambda rs: int(rs["metadata"]["annotations"].get(REVISION, 0)))
        for rs in idle[:max(0, len(idle) - limit)]:
            self._remove(REPLICASET, rs, orphan=False)
        return len(idle) > limit

    @staticmethod
    def _complete(deployment: Obj, status: Obj) -> bool:
        replicas = deployment["spec"]["replicas"]
        return (status.get("updatedReplicas", 0) == replicas and status.get("replicas", 0) == replicas
                and status.get("availableReplicas", 0) == replicas
                and status.get("observedGeneration", 0) >= deployment["metadata"]["generation"])

    def _deployment_status(self, deployment: Obj, new: Obj, olds: list[Obj], t: float) -> Obj:
        """Kubernetes' calculateStatus and syncRolloutStatus."""
        previous = deployment.get("status") or {}
        everything = [new, *olds]
        replicas = deployment["spec"]["replicas"]
        counts = {"replicas": sum(rs["status"].get("replicas", 0) for rs in everything),
                  "updatedReplicas": new["status"].get("replicas", 0),
                  "readyReplicas": sum(rs["status"].get("readyReplicas", 0) for rs in everything),
                  "availableReplicas": sum(rs["status"].get("availableReplicas", 0) for rs in everything)}
        counts["unavailableReplicas"] = max(0, replicas - counts["availableReplicas"])
        status: Obj = {"observedGeneration": deployment["metadata"]["generation"],
                       **{k: v for k, v in counts.items() if v}}
        conditions = list(previous.get("conditions") or [])
        if counts["availableReplicas"] >= replicas - max_unavailable(deployment):
            available = condition("Available", True, "MinimumReplicasAvailable",
                                  "Deployment has minimum availability.", t)
        else:
            available = condition("Available", False, "MinimumReplicasUnavailable",
                                  "Deployment does not have minimum availability.", t)
        status["conditions"] = set_condition(conditions, available)
        self._rollout_condition(deployment, previous, status, new["metadata"]["name"], t)
        if not status["conditions"]:
            del status["conditions"]
        return status

    def _rollout_condition(self, deployment: Obj, previous: Obj, status: Obj, new_name: str, t: float) -> None:
        """Kubernetes' syncRolloutStatus: the Progressing condition, and the progress deadline."""
        deadline = deployment["spec"].get("progressDeadlineSeconds")
        if deadline in (None, NO_DEADLINE):
            status["conditions"] = [c for c in status["conditions"] if c["type"] != "Progressing"]
            return
        current = progressing_condition(previous)
        if status.get("replicas", 0) == status.get("updatedReplicas", 0) and current and \
                current["reason"] == "NewReplicaSetAvailable":
            return
        uid = deployment["metadata"]["uid"]
        if self._complete(deployment, status):
            status["conditions"] = set_condition(status["conditions"], condition(
                "Progressing", True, "NewReplicaSetAvailable",
                f'ReplicaSet "{new_name}" has successfully progressed.', t))
        elif self._progressed(previous, status):
            progressing = condition("Progressing", True, "ReplicaSetUpdated",
                                    f'ReplicaSet "{new_name}" is progressing.', t)
            if current and current["status"] == "True":
                progressing["lastTransitionTime"] = current["lastTransitionTime"]
            status["conditions"] = [c for c in status["conditions"] if c["type"] != "Progressing"] + [progressing]
            self._progress_at[uid] = t
        else:
            latest = progressing_condition(status)
            if latest and latest["reason"] != "NewReplicaSetAvailable" and (
                    latest["reason"] == "ProgressDeadlineExceeded"
                    or t >= self._last_progress(deployment, latest) + deadline):
                status["conditions"] = set_condition(status["conditions"], condition(
                    "Progressing", False, "ProgressDeadlineExceeded",
                    f'ReplicaSet "{new_name}" has timed out progressing.', t))

    @staticmethod
    def _progressed(previous: Obj, status: Obj) -> bool:
        """Kubernetes' DeploymentProgressing: more updated, ready or available pods, or fewer old ones."""
        def get(s: Obj, name: str) -> int:
            return int(s.get(name, 0))
        return (get(status, "updatedReplicas") > get(previous, "updatedReplicas")
                or get(status, "replicas") - get(status, "updatedReplicas")
                < get(previous, "replicas") - get(previous, "updatedReplicas")
                or get(status, "readyReplicas") > get(previous, "readyReplicas")
                or get(status, "availableReplicas") > get(previous, "availableReplicas"))

    def _sync_replicaset(self, stored: Obj, t: float) -> bool:
        if self._adopt(POD, stored):
            return True
        pods = self._owned(POD, stored)
        missing = stored["spec"]["replicas"] - len(pods)
        for _ in range(max(0, missing)):
            self._create_pod(stored, t)
        for pod in sorted(pods, key=self._deletion_rank)[:max(0, -missing)]:
            self._remove(POD, pod, orphan=False)
        pods = self._owned(POD, stored)
        sims = [self._sims[p["metadata"]["uid"]] for p in pods]
        counts = {"fullyLabeledReplicas": len(pods), "readyReplicas": sum(s.ready(t) for s in sims),
                  "availableReplicas": sum(s.available(t) for s in sims)}
        status = {"replicas": len(pods), **{k: v for k, v in counts.items() if v},
                  "observedGeneration": stored["metadata"]["generation"]}
        if status == stored["status"]:
            return missing != 0
        self._put(REPLICASET, {**copy.deepcopy(stored), "status": status})
        return True

    def _deletion_rank(self, pod: Obj) -> tuple[bool, bool, float, int]:
        """Which pods a ReplicaSet removes first: unscheduled, then not Ready, then the most
        recently Ready, then the newest (as Kubernetes' ActivePodsWithRanks orders them)."""
        sim = self._sims[pod["metadata"]["uid"]]
        ready_at = sim.ready_at if sim.ready(self._now) else None
        return (sim.scheduled_at is not None, ready_at is not None, -(ready_at or 0.0),
                -self._order.get(pod["metadata"]["uid"], 0))

    def _create_pod(self, rs: Obj, t: float) -> None:
        template = rs["spec"]["template"]
        namespace = rs["metadata"]["namespace"]
        meta = {"name": self._generated_name(rs["metadata"]["name"] + "-", namespace, POD),
                "generateName": rs["metadata"]["name"] + "-", "namespace": namespace,
                "labels": dict(template["metadata"].get("labels") or {}),
                **({"annotations": dict(template["metadata"]["annotations"])}
                   if template["metadata"].get("annotations") else {}),
                "ownerReferences": [owner_reference(rs)], "uid": str(uuid.uuid4()), "creationTimestamp": rfc3339(t)}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(template["spec"]),
               "status": {"phase": "Pending", "qosClass": "BestEffort"}}
        self._register_pod(pod, t, float(rs["spec"].get("minReadySeconds", 0)))
        self._order[meta["uid"]] = self._rv
        self._put(POD, pod)

    def _register_pod(self, pod: Obj, t: float, min_ready: float = 0.0) -> None:
        images = tuple(str(c.get("image", "")) for c in pod["spec"].get("containers") or [])
        delay = max((self.images.slow.get(i, self.ready_delay) for i in images), default=self.ready_delay)
        self._sims[pod["metadata"]["uid"]] = PodSim(
            born=t, bad=frozenset(i for i in images if i in self.images.bad), delay=delay, min_ready=min_ready)
        node = pod["spec"].get("nodeName")
        if node:
            self._bind(pod, node, t)

    def _bind(self, pod: Obj, node: str, t: float) -> None:
        sim = self._sims[pod["metadata"]["uid"]]
        sim.scheduled_at = t
        self._ips += 1
        sim.ip = f"10.244.{self._node_index.get(node, 0) + 1}.{self._ips % 250 + 2}"
        pod["spec"]["nodeName"] = node

    def _schedule(self, t: float) -> bool:
        nodes = [n["metadata"]["name"] for n in self._all(NODE) if not n["spec"].get("unschedulable")]
        pending = [p for p in self._all(POD) if not p["spec"].get("nodeName")]
        if not nodes or not pending:
            return False
        for pod in sorted(pending, key=lambda p: self._order.get(p["metadata"]["uid"], 0)):
            draft = copy.deepcopy(pod)
            self._bind(draft, nodes[self._cursor % len(nodes)], t)
            self._cursor += 1
            self._put(POD, draft)
        return True

    def _sync_pod_status(self, stored: Obj, t: float) -> bool:
        status = self._pod_status(stored, t)
        if status == stored["status"]:
            return False
        self._put(POD, {**copy.deepcopy(stored), "status": status})
        return True

    def _pod_status(self, pod: Obj, t: float) -> Obj:
        sim = self._sims[pod["metadata"]["uid"]]
        if sim.scheduled_at is None:
            nodes = len(self._all(NODE))
            return {"phase": "Pending", "qosClass": "BestEffort", "conditions": [{
                "type": "PodScheduled", "status": "False", "lastProbeTime": None,
                "lastTransitionTime": rfc3339(sim.born), "reason": "Unschedulable",
                "message": f"0/{nodes} nodes are available: {nodes} node(s) were unschedulable."}]}
        since = rfc3339(sim.scheduled_at)
        ready = sim.ready(t)
        ready_since = rfc3339(sim.ready_at) if ready and sim.ready_at is not None else since
        names = [c.get("name", "") for c in pod["spec"].get("containers") or []]

        def cond(kind: str, ok: bool, when: str) -> Obj:
            extra = {} if ok else {"reason": "ContainersNotReady",
                                   "message": f"containers with unready status: [{' '.join(names)}]"}
            return {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None,
                    "lastTransitionTime": when, **extra}

        node = self._objects.get(self._key(NODE, None, pod["spec"]["nodeName"]))
        host_ip = next((a["address"] for a in dig(node, "status", "addresses") or [] if a["type"] == "InternalIP"),
                       "10.0.0.1")
        return {"phase": "Running",
                "conditions": [cond("PodReadyToStartContainers", True, since), cond("Initialized", True, since),
                               cond("Ready", ready, ready_since), cond("ContainersReady", ready, ready_since),
                               cond("PodScheduled", True, since)],
                "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": sim.ip, "podIPs": [{"ip": sim.ip}],
                "startTime": since, "qosClass": "BestEffort",
                "containerStatuses": [self._container_status(c, pod, sim, t, ready)
                                      for c in pod["spec"].get("containers") or []]}

    def _container_status(self, container: Obj, pod: Obj, sim: PodSim, t: float, ready: bool) -> Obj:
        image = str(container.get("image", ""))
        started = rfc3339(sim.scheduled_at or sim.born)
        digest = hashlib.sha256(image.encode()).hexdigest()
        status: Obj = {"name": container.get("name"), "image": image,
                       "imageID": f"{image.split(':')[0]}@sha256:{digest}",
                       "containerID": "containerd://" + hashlib.sha256(
                           f"{pod['metadata']['uid']}/{container.get('name')}".encode()).hexdigest(),
                       "ready": ready, "started": image not in sim.bad, "restartCount": 0,
                       "state": {"running": {"startedAt": started}}, "lastState": {}}
        if image in sim.bad:
            first = sim.scheduled_at or sim.born
            restarts = int((t - first) // self.crash_interval)
            status.update(restartCount=restarts, state={"waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off 10s restarting failed container={container.get('name')} "
                           f"pod={pod['metadata']['name']}_{pod['metadata']['namespace']}"}})
            if restarts:
                crashed = first + restarts * self.crash_interval
                status["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": started,
                                                      "finishedAt": rfc3339(crashed)}}
        return status

    # -- pod logs --

    def pod_log(self, namespace: str, name: str, *, container: str | None = None, since_seconds: int | None = None,
                tail_lines: int | None = None, timestamps: bool = False, previous: bool = False) -> str:
        """The log of one container of a pod: a line for each thing that happened to it in the
        simulation, up to now, oldest first (empty while the pod is not scheduled)."""
        with self._present() as now:
            pod = self._require(POD, namespace, name)
            containers = {str(c.get("name", "")): c for c in pod["spec"].get("containers") or []}
            if container is None:
                if len(containers) != 1:
                    raise bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                      f"[{' '.join(containers)}]")
                container = next(iter(containers))
            elif container not in containers:
                raise bad_request(f"container {container} is not valid for pod {name}")
            lines = self._life(pod, containers[container], now)
            if previous:
                crashes = [t for t, text in lines if " exited with code " in text]
                if not crashes:
                    raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
                lines = [(t, text) for t, text in lines if t <= crashes[-1]]
            if since_seconds is not None:
                lines = [(t, text) for t, text in lines if t >= now - since_seconds]
            if tail_lines is not None:
                lines = lines[len(lines) - tail_lines:] if tail_lines else []
            return "".join(f"{rfc3339_micro(t) + ' ' if timestamps else ''}{text}\n" for t, text in lines)

    def _life(self, pod: Obj, container: Obj, now: float) -> list[tuple[float, str]]:
        """(time, line) for what happened to a container of a pod until `now`: scheduled, image
        pulled and started, Ready, and for a bad image each crash and restart."""
        sim = self._sims[pod["metadata"]["uid"]]
        if sim.scheduled_at is None:
            return []
        meta, name = pod["metadata"], container.get("name")
        image = str(container.get("image", ""))
        start = sim.scheduled_at
        lines = [(start, f"pod {meta['namespace']}/{meta['name']} scheduled to node {pod['spec']['nodeName']}, "
                         f"pod IP {sim.ip}"),
                 (start, f'container {name}: pulling image "{image}"'),
                 (start, f'container {name}: started, image "{image}"')]
        if image in sim.bad:
            restarts = int((now - start) // self.crash_interval)
            lines += [(start + n * self.crash_interval, f"container {name}: exited with code 1 (Error), restart {n}, "
                       "back-off restarting failed container (CrashLoopBackOff)") for n in range(1, restarts + 1)]
        elif sim.ready(now) and sim.ready_at is not None:
            lines.append((sim.ready_at, f"container {name}: Ready"))
        return lines

    # -- the service proxy and its metrics --

    def proxy(self, namespace: str, service: str, path: str) -> tuple[int, Obj]:
        parts = service.split(":")
        name = parts[1] if len(parts) == 3 else parts[0]
        with self._present():
            pods = self._endpoints(namespace, name)
            if not pods:
                self.proxy_counts[(namespace, name, "", "503")] += 1
                return 503, ApiError(503, "ServiceUnavailable",
                                     f'no endpoints available for service "{name}"').status()
            pod = pods[self._proxy_cursor[(namespace, name)] % len(pods)]
            self._proxy_cursor[(namespace, name)] += 1
            image = str(pod["spec"]["containers"][0].get("image", ""))
            deployment = self._deployment_of(pod) or name
            code, body = self._answer(namespace, deployment, image, path)
            self.proxy_counts[(namespace, deployment, image_version(image), str(code))] += 1
            return code, body

    def ingress_pod(self, namespace: str, deployment: str) -> str | None:
        """The image of the Ready pod of `deployment` whose turn it is (round-robin); None when
        no pod is Ready. Counted as the proxy counts, under the code the caller reports."""
        with self._present():
            pods = self._endpoints(namespace, deployment)
            if not pods:
                return None
            pod = pods[self._proxy_cursor[(namespace, deployment)] % len(pods)]
            self._proxy_cursor[(namespace, deployment)] += 1
            return str(pod["spec"]["containers"][0].get("image", ""))

    def ready_pods(self) -> list[tuple[str, str, str]]:
        """(namespace, Deployment, image of the first container) of each Ready pod a Deployment owns
        (through its ReplicaSet), in namespace and pod name order."""
        with self._present() as now:
            ready = []
            for pod in self._all(POD):
                deployment = self._deployment_of(pod) if self._sims[pod["metadata"]["uid"]].ready(now) else None
                if deployment is not None:
                    containers = pod["spec"].get("containers") or [{}]
                    ready.append((pod["metadata"]["namespace"], deployment, str(containers[0].get("image", ""))))
            return ready

    def answer(self, namespace: str, deployment: str, image: str, path: str) -> tuple[int, Obj]:
        """The made-up answer of a pod of `image` (as the service proxy gives it)."""
        with self._lock:
            return self._answer(namespace, deployment, image, path)

    def count(self, namespace: str, deployment: str, image: str, code: int) -> None:
        with self._lock:
            self.proxy_counts[(namespace, deployment, image_version(image) if image else "", str(code))] += 1

    def _answer(self, namespace: str, deployment: str, image: str, path: str) -> tuple[int, Obj]:
        every = self.images.erroring.get(image)
        self._image_hits[(namespace, deployment, image)] += 1
        if every and self._image_hits[(namespace, deployment, image)] % every == 0:
            return 500, {"detail": f"injected error: {image} fails every {every} requests"}
        if path == "/health":
            return 200, {"status": "ok"}
        if path == "/api/version":
            return 200, {"version": image_version(image)}
        return 200, {"path": path}

    def _endpoints(self, namespace: str, name: str) -> list[Obj]:
        service = self._objects.get(self._key(SERVICE, namespace, name))
        deployment = self._objects.get(self._key(DEPLOYMENT, namespace, name))
        if service is not None and dig(service, "spec", "selector"):
            requirements = [(k, "in", frozenset([v])) for k, v in service["spec"]["selector"].items()]
        elif deployment is not None:
            requirements = selector_requirements(deployment["spec"]["selector"])
        elif service is None:
            raise SERVICE.not_found(name)
        else:
            return []
        return [p for p in self._all(POD, namespace) if labels_match(requirements, p["metadata"].get("labels"))
                and self._sims[p["metadata"]["uid"]].ready(self._now)]

    def _deployment_of(self, pod: Obj) -> str | None:
        rs = next((o for o in self._all(REPLICASET, pod["metadata"]["namespace"])
                   if o["metadata"]["uid"] == controller_uid(pod)), None)
        return next((ref["name"] for ref in (rs or {"metadata": {}})["metadata"].get("ownerReferences") or []
                     if ref.get("controller") and ref.get("kind") == "Deployment"), None)

    def image_settings(self) -> Obj:
        with self._lock:
            return self.images.as_json()

    def update_images(self, body: Any) -> Obj:
        with self._lock:
            self.images.update(body)
            return self.images.as_json()

    def metrics(self) -> str:
        with self._lock:
            lines = ["# HELP erni_k8s_proxy_requests_total Requests the Kubernetes API double proxied to pods, "
                     "by Deployment, the answering pod's version and the status code.",
                     "# TYPE erni_k8s_proxy_requests_total counter"]
            for (namespace, deployment, version, code), count in sorted(self.proxy_counts.items()):
                labels = {"namespace": namespace, "deployment": deployment, "version": version, "code": code}
                text = ",".join(f'{k}="{prom_escape(v)}"' for k, v in labels.items())
                lines.append(f"erni_k8s_proxy_requests_total{{{text}}} {count}")
            return "\n".join(lines) + "\n"


def prom_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def decode_json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError as e:
        raise bad_request(f"the request body is not JSON: {e}") from e


def decode_body(content_type: str, raw: bytes) -> Any:
    """A POST or PUT body: JSON, or YAML when the request says so (kube-apiserver takes both)."""
    if not content_type.endswith("yaml"):
        return decode_json(raw)
    try:
        return yaml.safe_load(raw or b"")
    except yaml.YAMLError as e:
        raise bad_request(f"the request body is not YAML: {e}") from e


def decode_patch(content_type: str, raw: bytes) -> Any:
    if content_type not in PATCH_TYPES:
        raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted "
                       f"media types include: {', '.join(PATCH_TYPES)}")
    return decode_body(content_type, raw)


def apply_patch(content_type: str, current: Obj, patch: Any) -> Any:
    if content_type == "application/json-patch+json":
        try:
            return json_patch(current, patch)
        except JsonPatchError as e:
            raise ApiError(422, "Invalid", f"the JSON patch does not apply: {e}") from e
    if not isinstance(patch, dict):
        raise bad_request("a merge patch must be a JSON object")
    if content_type == "application/merge-patch+json":
        return merge_patch(current, patch)
    return strategic_merge(current, patch)


# --- HTTP -----------------------------------------------------------------------------------------

@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: bytes

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class Text:
    """An API answer in text/plain (a pod log) instead of a JSON document."""

    body: str


HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailers", "transfer-encoding", "upgrade", "host", "content-length"})
TRUE = ("1", "t", "T", "TRUE", "true", "True")  # what Go's strconv.ParseBool takes as true
Answer = tuple[int, list[tuple[str, str]], bytes]  # status, headers, body


class Forwarder:
    """HTTP/1.1 to the backends over kept-alive connections, one per backend and serving thread
    (each client connection of the front door has its thread), so a client that keeps its
    connection open, as nginx does, keeps one to the backend too; as a proxy does, redirects go
    back to the client and no proxy from the environment is used. A kept connection that the
    backend closed meanwhile is opened again once, as nginx does: when the request could not be
    sent, or when the backend closed it without answering an idempotent request (a POST is never
    sent twice)."""

    IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
    STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)

    def __init__(self) -> None:
        self._local = threading.local()

    def send(self, backend: str, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Answer:
        url = urlsplit(backend)
        conns: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("conns", {})
        path = url.path.rstrip("/") + target
        while True:
            conn = conns.pop(url.netloc, None)
            reused = conn is not None
            if conn is None:
                conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
            sent = False
            try:
                conn.request(method, path, body=body or None, headers=dict(headers))
                sent = True
                answer = conn.getresponse()
                payload = answer.read()
            except (http.client.HTTPException, OSError) as e:
                conn.close()
                if reused and isinstance(e, self.STALE) and (not sent or method in self.IDEMPOTENT):
                    continue
                raise
            if answer.will_close:
                conn.close()
            else:
                conns[url.netloc] = conn
            return answer.status, answer.getheaders(), payload




def host_port(url: str) -> str:
    """host:port of a URL, the port defaulted from the scheme (a Prometheus target)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def log_number(request: Request, name: str, pod: str, minimum: int) -> int | None:
    """An integer PodLogOptions parameter: 400 when it is not a number, 422 when it is too small."""
    value = request.param(name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise bad_request(f"{name}: invalid integer {value!r}") from None
    if number < minimum:
        bound = "greater than 0" if minimum == 1 else "greater than or equal to 0"
        raise ApiError(422, "Invalid", f'PodLogOptions "{pod}" is invalid: {name}: Invalid value: {number}: '
                       f"must be {bound}")
    return number


class Server(ThreadingHTTPServer):
    """A thread per connection; a listen backlog a burst of new connections (nginx opening its
    upstream connections under load) does not overflow, where socketserver's default of 5 makes
    the kernel drop SYNs and clients wait seconds for the retry."""

    request_queue_size = 128
    daemon_threads = True


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive and a Content-Length on every answer; subclasses say what to answer."""

    protocol_version = "HTTP/1.1"
    server_version = "k8sapi-double"
    # headers and body leave in separate writes: without TCP_NODELAY a kept-alive client's
    # delayed ACK would hold each answer for ~40 ms
    disable_nagle_algorithm = True

    def log_message(self, *_args: Any) -> None:
        pass

    def answer(self, path: str, query: str, body: bytes) -> Answer:
        raise NotImplementedError

    def read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def handle_any(self) -> None:
        body = self.read_body()
        url = urlsplit(self.path)
        try:
            code, headers, payload = self.answer(url.path if url.path.startswith("/") else "/" + url.path,
                                                 url.query, body)
        except Exception as e:  # a bug in the double must still answer
            traceback.print_exc()
            code, headers, payload = 500, [("Content-Type", "text/plain")], f"the API double failed: {e!r}".encode()
        self.send_response(code)
        length = str(len(payload))
        for name, value in headers:
            if name.lower() == "content-length":
                length = value if self.command == "HEAD" else length  # a HEAD answer tells the GET's length
            else:
                self.send_header(name, value)
        if code not in (204, 304) and code >= 200:
            self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD" and code not in (204, 304):
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any


class KubeAPIDouble:
    """The double on 127.0.0.1: a context manager; see the module docstring for what it does."""

    def __init__(self, token: str | None = None, *, port: int = 0, nodes: Sequence[str] = DEFAULT_NODES,
                 bad_images: Iterable[str] = (), slow_images: Mapping[str, float] | None = None,
                 erroring_images: Mapping[str, int] | None = None, ready_delay: float = 0.3,
                 crash_interval: float = 1.0, clock: Callable[[], float] = time.time,
                 backends: Mapping[str, str] | None = None, scrape_targets: str | Path | None = None,
                 target_labels: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.token = token or secrets.token_urlsafe(24)
        self.backends = dict(backends or {})
        self._forwarder = Forwarder()
        self.scrape_targets = Path(scrape_targets) if scrape_targets is not None else None
        self.target_labels = {namespace: dict(labels) for namespace, labels in (target_labels or {}).items()}
        images = ImageBehaviour()
        images.update({"bad": list(bad_images), "slow": dict(slow_images or {}),
                       "erroring": dict(erroring_images or {})})
        self.cluster = Cluster(nodes=nodes, images=images, ready_delay=ready_delay,
                               crash_interval=crash_interval, clock=clock)
        self._log: list[Obj] = []
        self._log_lock = threading.Lock()
        self._stopped = False
        self._httpd = Server(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="k8sapi",
                                        daemon=True)
        self._thread.start()
        self._node_ports: dict[tuple[str, str], ThreadingHTTPServer] = {}
        self._node_ports_lock = threading.Lock()
        self._discovery_stop = threading.Event()
        self._targets_written: str | None = None
        self._discoverer: threading.Thread | None = None
        if self.scrape_targets is not None:
            self._write_targets([], force=True)
            self._discoverer = threading.Thread(target=self._discover, name="k8sapi-sd", daemon=True)
            self._discoverer.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> KubeAPIDouble:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving: the API, the node ports and the service discovery (leaving `[]` in its file)."""
        if self._stopped:
            return
        self._stopped = True
        self._discovery_stop.set()
        if self._discoverer is not None:
            self._discoverer.join()
        with self._node_ports_lock:
            servers = [self._httpd, *self._node_ports.values()]
        for server in servers:
            server.shutdown()
            server.server_close()
        if self.scrape_targets is not None:
            self._write_targets([], force=True)

    def node_port(self, namespace: str, deployment: str, port: int = 0) -> int:
        """Open a port on 127.0.0.1 that answers as the front door to `deployment` does, without a
        token and without the /_ingress/{namespace}/{deployment} prefix: what a NodePort Service
        would be. Once per Deployment: a second call returns the port already open. Closed by stop()."""
        with self._node_ports_lock:
            if self._stopped:
                raise RuntimeError("the Kubernetes API double is stopped")
            server = self._node_ports.get((namespace, deployment))
            if server is None:
                server = Server(("127.0.0.1", port), self._node_port_handler(namespace, deployment))
                server.daemon_threads = True
                threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True,
                                 name=f"k8sapi-node-port-{namespace}-{deployment}").start()
                self._node_ports[(namespace, deployment)] = server
            return int(server.server_address[1])

    def node_ports(self) -> dict[tuple[str, str], int]:
        """The open node ports by (namespace, deployment)."""
        with self._node_ports_lock:
            return {key: int(server.server_address[1]) for key, server in self._node_ports.items()}

    def backend(self, namespace: str, image: str) -> str | None:
        """The URL of the real process standing for pods of `image` in `namespace`: the
        "{namespace}/{image}" entry of `backends`, else the "{image}" one; None without either."""
        backend = self.backends.get(f"{namespace}/{image}")
        return backend if backend is not None else self.backends.get(image)

    def scrape_target_groups(self) -> list[Obj]:
        """Prometheus file_sd target groups for the Ready pods of Deployments that have a backend:
        one per namespace, Deployment and backend host:port, sorted."""
        groups: dict[tuple[str, str, str], Obj] = {}
        for namespace, deployment, image in self.cluster.ready_pods():
            backend = self.backend(namespace, image)
            if backend is None:
                continue
            target = host_port(backend)
            groups.setdefault((namespace, deployment, target), {"targets": [target], "labels": {
                "namespace": namespace, "deployment": deployment, **self.target_labels.get(namespace, {})}})
        return [groups[key] for key in sorted(groups)]

    def _discover(self) -> None:
        while True:
            try:
                self._write_targets(self.scrape_target_groups())
            except Exception:  # keep discovering; a failed write is tried again next time
                traceback.print_exc()
            if self._discovery_stop.wait(0.25):
                return

    def _write_targets(self, groups: list[Obj], *, force: bool = False) -> None:
        """Replace the file_sd file atomically (a temporary file beside it, then os.replace), and
        only when its content changes."""
        assert self.scrape_targets is not None
        text = json.dumps(groups, indent=2) + "\n"
        if text == self._targets_written and not force:
            return
        path = self.scrape_targets
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._targets_written = text

    def write_kubeconfig(self, path: str | Path, token: str | None = None, namespace: str = "default") -> Path:
        """A kubeconfig (JSON, which YAML readers accept) whose current context is this double."""
        path = Path(path)
        config = {"apiVersion": "v1", "kind": "Config", "preferences": {},
                  "clusters": [{"name": "k8sapi-double", "cluster": {"server": self.url}}],
                  "users": [{"name": "k8sapi-double", "user": {"token": token or self.token}}],
                  "contexts": [{"name": "k8sapi-double", "context": {
                      "cluster": "k8sapi-double", "user": "k8sapi-double", "namespace": namespace}}],
                  "current-context": "k8sapi-double"}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(config, indent=2) + "\n")
        return path

    def requests(self) -> list[Obj]:
        """The API requests served so far (the double's own endpoints are not logged)."""
        with self._log_lock:
            return copy.deepcopy(self._log)

    def set_images(self, body: Obj) -> Obj:
        """Change image behaviour at runtime (as POST /_double/images does); returns the new settings."""
        return self.cluster.update_images(body)

    def ingress_url(self, namespace: str, deployment: str) -> str:
        """Base URL of the front door to `deployment` (what a LoadBalancer or Ingress would be)."""
        return f"{self.url}/_ingress/{namespace}/{deployment}"

    def ingress(self, method: str, path: str, query: str, headers: Mapping[str, str],
                body: bytes) -> Answer:
        """A request through the front door: to a Ready pod's backend (see `backend`) with method,
        path, query, headers and body as sent, the backend's answer returned as is (redirects
        included); without a backend, the made-up answers of the service proxy. 503 when no pod is
        Ready, a 404 Status when there is no such Deployment or Service."""
        parts = path.split("/", 4)   # ['', '_ingress', ns, deployment, rest of the path]
        namespace, deployment = parts[2], parts[3] if len(parts) > 3 else ""
        target = "/" + (parts[4] if len(parts) > 4 else "")
        try:
            image = self.cluster.ingress_pod(namespace, deployment)
        except ApiError as e:
            return e.code, [("Content-Type", "application/json")], json.dumps(e.status()).encode()
        if image is None:
            self.cluster.count(namespace, deployment, "", 503)
            return 503, [("Content-Type", "application/json")], b'{"detail": "no Ready pod"}'
        backend = self.backend(namespace, image)
        if backend is None:
            code, made_up = self.cluster.answer(namespace, deployment, image, target)
            self.cluster.count(namespace, deployment, image, code)
            return code, [("Content-Type", "application/json")], json.dumps(made_up).encode()
        url = backend.rstrip("/") + target + (f"?{query}" if query else "")
        forwarded = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            code, out_headers, payload = self._forwarder.send(backend, method, target + (f"?{query}" if query else ""),
                                                              forwarded, body)
        except (http.client.HTTPException, OSError) as e:
            code, out_headers, payload = 502, [("Content-Type", "text/plain")], f"backend {url}: {e}".encode()
        self.cluster.count(namespace, deployment, image, code)
        dropped = HOP_BY_HOP - {"content-length"} if method == "HEAD" else HOP_BY_HOP
        return code, [(k, v) for k, v in out_headers if k.lower() not in dropped], payload

    # -- dispatch --

    def handle(self, request: Request, authorization: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request."""
        if request.path == "/metrics" and request.method == "GET":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.cluster.metrics().encode()
        if request.path.startswith("/_double/"):
            code, payload = self._control(request)
            return code, "application/json", json.dumps(payload).encode()
        try:
            if not self._authorized(authorization):
                raise unauthorized()
            code, payload = self._api(request)
        except ApiError as e:
            code, payload = e.code, e.status()
        except Exception as e:  # a bug in the double must still answer like an API server
            traceback.print_exc()
            code, payload = 500, ApiError(500, "InternalError", f"the API double failed: {e!r}").status()
        with self._log_lock:
            self._log.append({"method": request.method, "path": request.path,
                              "query": {k: v[0] if len(v) == 1 else v for k, v in request.query.items()},
                              "contentType": request.content_type, "code": code})
        if isinstance(payload, Text):
            return code, "text/plain", payload.body.encode()
        return code, "application/json", json.dumps(payload).encode()

    def _authorized(self, authorization: str) -> bool:
        scheme, _, credentials = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self.token.encode())

    def _control(self, request: Request) -> tuple[int, Any]:
        if request.path == "/_double/requests" and request.method == "GET":
            return 200, self.requests()
        if request.path == "/_double/requests" and request.method == "DELETE":
            with self._log_lock:
                self._log.clear()
            return 200, []
        if request.path == "/_double/images" and request.method == "GET":
            return 200, self.cluster.image_settings()
        if request.path == "/_double/images" and request.method == "POST":
            try:
                return 200, self.set_images(json.loads(request.body or b"null"))
            except ValueError as e:
                return 400, {"error": str(e)}
        return 404, {"error": f"no {request.method} {request.path} here"}

    def _api(self, request: Request) -> tuple[int, Any]:
        segments = [unquote(s) for s in request.path.split("/") if s]
        discovery = self._discovery(segments)
        if discovery is not None:
            if request.method != "GET":
                raise not_allowed()
            return 200, discovery
        if segments[:2] == ["api", "v1"]:
            group, rest = "", segments[2:]
        elif len(segments) >= 3 and segments[0] == "apis" and segments[1] in GROUPS and segments[2] == "v1":
            group, rest = segments[1], segments[3:]
        else:
            raise no_such_path()
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        kind = BY_PATH.get((group, rest[0])) if rest else None
        if kind is None or (namespace is not None and not kind.namespaced):
            raise no_such_path()
        if request.param("watch") in ("true", "1"):
            raise ApiError(405, "MethodNotAllowed", "watch is not supported by the Kubernetes API double")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if name is not None and kind.namespaced and namespace is None:
            raise no_such_path()
        if sub is None:
            return self._verb(request, kind, namespace, name)
        if kind is SERVICE and sub == "proxy" and namespace and name and request.method in ("GET", "POST"):
            tail = request.path.split("/", 8)[8] if request.path.count("/") >= 8 else ""
            return self.cluster.proxy(namespace, name, "/" + tail)
        if len(rest) > 3 or not namespace or not name:
            raise no_such_path()
        return self._subresource(request, kind, namespace, name, sub)

    @staticmethod
    def _discovery(segments: list[str]) -> Obj | None:
        if segments == ["version"]:
            return dict(VERSION_INFO)
        if segments == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if segments == ["api", "v1"]:
            return resource_list("")
        if segments == ["apis"]:
            return api_group_list()
        if len(segments) == 2 and segments[0] == "apis" and segments[1] in GROUPS:
            return api_group(segments[1])
        if len(segments) == 3 and segments[0] == "apis" and segments[1] in GROUPS and segments[2] == "v1":
            return resource_list(segments[1])
        return None

    def _verb(self, request: Request, kind: Kind, namespace: str | None, name: str | None) -> tuple[int, Any]:
        verbs = {("GET", False): "list", ("POST", False): "create", ("GET", True): "get",
                 ("PUT", True): "update", ("PATCH", True): "patch", ("DELETE", True): "delete"}
        verb = verbs.get((request.method, name is not None))
        if verb is None or verb not in kind.verbs or (verb == "create" and kind.namespaced and namespace is None):
            raise not_allowed()
        dry_run = request.param("dryRun") == "All"
        cluster = self.cluster
        if verb == "list":
            return 200, cluster.list_objects(kind, namespace, request.param("labelSelector") or "",
                                     request.param("fieldSelector") or "")
        if verb == "create":
            return 201, cluster.create(kind, namespace, decode_body(request.content_type, request.body),
                                       dry_run=dry_run)
        assert name is not None
        if verb == "get":
            return 200, cluster.get(kind, namespace, name)
        if verb == "update":
            return 200, cluster.replace(kind, namespace, name, decode_body(request.content_type, request.body),
                                        dry_run=dry_run)
        if verb == "patch":
            return cluster.patch(kind, namespace, name, request.content_type, request.body, dry_run=dry_run,
                                 field_manager=request.param("fieldManager"))
        options = decode_json(request.body) if request.body.strip() else {}
        if not isinstance(options, dict):
            raise bad_request("the body of a DELETE must be DeleteOptions")
        if request.param("propagationPolicy"):
            options["propagationPolicy"] = request.param("propagationPolicy")
        if dry_run:
            options["dryRun"] = ["All"]
        return 200, cluster.delete(kind, namespace, name, options)

    def _subresource(self, request: Request, kind: Kind, namespace: str, name: str, sub: str) -> tuple[int, Any]:
        method, dry_run = request.method, request.param("dryRun") == "All"
        if kind is POD and sub == "eviction":
            if method != "POST":
                raise not_allowed()
            return 201, self.cluster.evict(namespace, name, decode_json(request.body))
        if kind is POD and sub == "log":
            if method != "GET":
                raise not_allowed()
            return 200, Text(self.cluster.pod_log(
                namespace, name, container=request.param("container"),
                since_seconds=log_number(request, "sinceSeconds", name, 1),
                tail_lines=log_number(request, "tailLines", name, 0),
                timestamps=request.param("timestamps") in TRUE, previous=request.param("previous") in TRUE))
        if kind is DEPLOYMENT and sub == "scale":
            if method == "GET":
                return 200, self.cluster.scale(namespace, name)
            if method in ("PUT", "PATCH"):
                content_type = request.content_type if method == "PATCH" else None
                return 200, self.cluster.update_scale(namespace, name, content_type, request.body, dry_run=dry_run)
            raise not_allowed()
        if kind is DEPLOYMENT and sub == "status":
            if method != "GET":
                raise not_allowed()
            return 200, self.cluster.get(kind, namespace, name)
        raise no_such_path()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class ApiHandler(Handler):
            def answer(self, path: str, query: str, body: bytes) -> Answer:
                if path.startswith("/_ingress/"):
                    return double.ingress(self.command, path, query, dict(self.headers.items()), body)
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                request = Request(self.command, path, parse_qs(query), content_type, body)
                code, response_type, payload = double.handle(request, self.headers.get("Authorization") or "")
                return code, [("Content-Type", response_type)], payload

        return ApiHandler

    def _node_port_handler(self, namespace: str, deployment: str) -> type[BaseHTTPRequestHandler]:
        double, prefix = self, f"/_ingress/{namespace}/{deployment}"

        class NodePortHandler(Handler):
            def answer(self, path: str, query: str, body: bytes) -> Answer:
                return double.ingress(self.command, prefix + path, query, dict(self.headers.items()), body)

        return NodePortHandler


# --- command line -------------------------------------------------------------------------------

def pairs(values: list[str], convert: Callable[[str], Any], flag: str) -> dict[str, Any]:
    result = {}
    for value in values:
        image, sep, number = value.rpartition("=")
        if not sep or not image:
            raise SystemExit(f"{flag} expects IMAGE=VALUE, not {value!r}")
        result[image] = convert(number)
    return result


def backend_pairs(values: list[str]) -> dict[str, str]:
    """--backend [NS/]IMAGE=URL: split at the first "=" (an image has none, a URL may)."""
    result = {}
    for value in values:
        key, sep, url = value.partition("=")
        if not sep or not key or not url:
            raise SystemExit(f"--backend expects [NAMESPACE/]IMAGE=URL, not {value!r}")
        result[key] = url
    return result


def node_port_pairs(values: list[str]) -> list[tuple[str, str, int]]:
    """--node-port NS/DEPLOYMENT=PORT (PORT 0: any free port)."""
    result = []
    for value in values:
        m = re.fullmatch(r"([^/=]+)/([^/=]+)=(\d+)", value)
        if not m:
            raise SystemExit(f"--node-port expects NAMESPACE/DEPLOYMENT=PORT, not {value!r}")
        result.append((m[1], m[2], int(m[3])))
    return result


def label_pairs(values: list[str]) -> dict[str, dict[str, str]]:
    """--target-labels NS=key=value[,key=value]; repeating a namespace adds to its labels."""
    result: dict[str, dict[str, str]] = {}
    for value in values:
        namespace, sep, text = value.partition("=")
        labels = [item.partition("=") for item in text.split(",")]
        if not sep or not namespace or not all(key and eq for key, eq, _ in labels):
            raise SystemExit(f"--target-labels expects NAMESPACE=key=value[,key=value], not {value!r}")
        result.setdefault(namespace, {}).update({key: label for key, _, label in labels})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.k8sapi",
                                     description="A Kubernetes API server double on 127.0.0.1 (see tests/k8sapi.py).")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--token", help="the bearer token to accept (default: a random one, printed second)")
    parser.add_argument("--node", action="append", default=[], help="a node name (repeat; default node-1..3)")
    parser.add_argument("--bad-image", action="append", default=[], metavar="IMAGE",
                        help="pods of IMAGE never get Ready (repeat)")
    parser.add_argument("--slow-image", action="append", default=[], metavar="IMAGE=SECONDS",
                        help="pods of IMAGE get Ready after SECONDS (repeat)")
    parser.add_argument("--erroring-image", action="append", default=[], metavar="IMAGE=N",
                        help="pods of IMAGE answer every Nth proxied request with 500 (repeat)")
    parser.add_argument("--ready-delay", type=float, default=0.3, help="seconds until a pod is Ready")
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig for the double here")
    parser.add_argument("--backend", action="append", default=[], metavar="[NS/]IMAGE=URL",
                        help="forward requests for pods of IMAGE (in namespace NS only, if given) to URL (repeat)")
    parser.add_argument("--node-port", action="append", default=[], metavar="NS/DEPLOYMENT=PORT",
                        help="open a node port to DEPLOYMENT on 127.0.0.1:PORT, 0 for any free port; printed as "
                             "'node-port NS/DEPLOYMENT PORT' (repeat)")
    parser.add_argument("--scrape-targets", type=Path, metavar="FILE",
                        help="keep a Prometheus file_sd file of the Ready pods' backends here")
    parser.add_argument("--target-labels", action="append", default=[], metavar="NS=key=value[,key=value]",
                        help="extra labels on the scrape targets of namespace NS (repeat)")
    args = parser.parse_args(argv)
    node_ports = node_port_pairs(args.node_port)
    double = KubeAPIDouble(args.token, port=args.port, nodes=args.node or DEFAULT_NODES,
                           bad_images=args.bad_image, slow_images=pairs(args.slow_image, float, "--slow-image"),
                           erroring_images=pairs(args.erroring_image, int, "--erroring-image"),
                           ready_delay=args.ready_delay, backends=backend_pairs(args.backend),
                           scrape_targets=args.scrape_targets, target_labels=label_pairs(args.target_labels))
    if args.kubeconfig:
        double.write_kubeconfig(args.kubeconfig)
    print(double.url, flush=True)
    if not args.token:
        print(f"token {double.token}", flush=True)
    for namespace, deployment, port in node_ports:
        print(f"node-port {namespace}/{deployment} {double.node_port(namespace, deployment, port)}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    double.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

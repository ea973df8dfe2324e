"""An HTTP-level double of Loki's query API, for the access-log source's tests.

Loki is not packaged for this machine (no Debian package, not on PyPI), so, as for Kubernetes,
its tests talk HTTP to a double of the one endpoint the project calls, with the semantics Loki
documents for it: GET /loki/api/v1/query_range with query, start and end (Unix nanoseconds),
limit and direction; entries with start <= ts < end, at most `limit` of them, the oldest first
for direction=forward; answers {"status": "success", "data": {"resultType": "streams",
"result": [{"stream": {...}, "values": [["<ns>", "<line>"], ...]}]}}. A multi-tenant Loki
answers 401 "no org id" without X-Scope-OrgID. Only what LogQL the tests use is understood: a
stream selector of equality matchers and `|=` line filters; anything else is a 400 parse error,
as Loki gives.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from servers import LocalServer

_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*')


def parse_logql(query: str) -> tuple[dict[str, str], list[str]]:
    m = re.fullmatch(r'\s*\{([^}]*)\}((?:\s*\|=\s*"(?:[^"\\]|\\.)*")*)\s*', query)
    if not m:
        raise ValueError(f"parse error : syntax error: unexpected input in {query!r}")
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in m.group(1).split(","))):
        mm = _MATCHER.fullmatch(part)
        if not mm:
            raise ValueError(f"parse error : only = matchers are understood here: {part!r}")
        labels[mm.group(1)] = mm.group(2)
    if not labels:
        raise ValueError("parse error : queries require at least one regexp or equality matcher")
    filters = [json.loads(f) for f in re.findall(r'\|=\s*("(?:[^"\\]|\\.)*")', m.group(2))]
    return labels, filters


@dataclass
class LokiDouble:
    tenant: str = ""                  # multi-tenant when set: X-Scope-OrgID must be this
    streams: list[tuple[dict[str, str], list[tuple[int, str]]]] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = LocalServer({"/loki/api/v1/query_range": self._query_range})

    @property
    def url(self) -> str:
        return self.server.url

    def push(self, labels: dict[str, str], entries: list[tuple[float, str]]) -> None:
        self.streams.append((labels, [(int(t * 1e9), line) for t, line in entries]))

    def close(self) -> None:
        self.server.close()

    def _query_range(self, h: BaseHTTPRequestHandler, _body: bytes) -> tuple[int, dict[str, str], bytes]:
        q = {k: v[0] for k, v in parse_qs(urlsplit(h.path).query).items()}
        self.queries.append(q)
        if self.tenant and h.headers.get("X-Scope-OrgID") != self.tenant:
            return 401, {"Content-Type": "text/plain"}, b"no org id\n"
        try:
            labels, filters = parse_logql(q.get("query", ""))
            start, end = int(q.get("start", "0")), int(q.get("end", str(2**63 - 1)))
            limit = int(q.get("limit", "100"))
        except ValueError as exc:
            return 400, {"Content-Type": "text/plain"}, f"{exc}\n".encode()
        result = []
        picked: list[tuple[int, int, str]] = []
        for i, (stream, entries) in enumerate(self.streams):
            if all(stream.get(k) == v for k, v in labels.items()):
                picked += [(ts, i, line) for ts, line in entries
                           if start <= ts < end and all(f in line for f in filters)]
        forward = q.get("direction", "backward") == "forward"
        picked.sort(reverse=not forward)
        picked = picked[:limit]
        for i, (stream, _) in enumerate(self.streams):
            values = [[str(ts), line] for ts, j, line in picked if j == i]
            if values:
                result.append({"stream": stream, "values": values})
        body = {"status": "success", "data": {"resultType": "streams", "result": result, "stats": {}}}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

# -*- coding: utf-8 -*-
# erni-deploy: the options that read nginx's JSON access lines through Loki
# (mirrors erni_accesslog.LOG_SOURCE_SPEC).

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  loki_url:
    description:
      - Read nginx's JSON access lines from Loki's query API at this URL (C(/loki/api/v1/query_range))
        instead of the access log file, where the platform ships them there.
    type: str
  loki_query:
    description: The LogQL query that selects nginx's JSON access lines in Loki.
    type: str
    default: '{job="fluent-bit",service="nginx"}'
  loki_tenant:
    description: The tenant (C(X-Scope-OrgID)) of a multi-tenant Loki, as ERNI-KI's V(erni-ki).
    type: str
    default: ""
"""

# -*- coding: utf-8 -*-
# erni-deploy: the Prometheus connection options shared by the modules that query it
# (mirrors erni_prometheus.prometheus_argument_spec()).

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  prometheus_url:
    description: Base URL of Prometheus, for example V(http://127.0.0.1:9090).
    type: str
    required: true
  bearer_token:
    description: Bearer token for Prometheus.
    type: str
  username:
    description: Basic auth user (ignored when O(bearer_token) is set).
    type: str
  password:
    description: Basic auth password.
    type: str
  ca_path:
    description: CA bundle for Prometheus's certificate.
    type: path
  validate_certs:
    description: Verify Prometheus's TLS certificate; turning it off is reported as a warning.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each query.
    type: float
    default: 10
"""

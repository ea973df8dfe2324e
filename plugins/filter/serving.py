"""`metric_selector | serving_selector(serving, release_label)`: the Prometheus label selector of
what serves, whatever the target.

`serving` is a target's state record ({release, colour?}); Compose adds the colour that serves,
Kubernetes has none (its pods carry the environment's labels only). With a release label, the
release narrows it further, so a release is never measured with its predecessor's series.
"""

from __future__ import annotations

from typing import Any


def serving_selector(selector: str, serving: dict[str, Any] | None, release_label: str | None = "") -> str:
    serving = serving or {}
    parts = [selector.strip().strip(",")] if selector and selector.strip() else []
    if serving.get("colour"):
        parts.append(f'colour="{serving["colour"]}"')
    if release_label and serving.get("release"):
        parts.append(f'{release_label}="{serving["release"]}"')
    return ",".join(parts)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"serving_selector": serving_selector}

"""`metric_selector | serving_selector(serving, release_label, colour_matcher)`: the Prometheus
label selector of what serves, whatever the target.

`serving` is a target's state record ({release, colour?}); Compose adds the colour that serves,
Kubernetes has none (its pods carry the environment's labels only). How a colour shows in the
series is `colour_matcher`, a matcher with `%s` for the colour's name: `colour="%s"` where the
service's own metrics carry a colour label (the sandbox), `name="erni-ki-production-%s"` where
only cAdvisor's container series tell the colours apart (ERNI-KI). With a release label, the
release narrows it further, so a release is never measured with its predecessor's series.
"""

from __future__ import annotations

from typing import Any


class ColourMatcherError(ValueError):
    """A bad input, named. Not AnsibleFilterError: importing ansible.errors makes a process a
    controller, and modules run in the same process (the unit tests) then print their
    warnings instead of returning them; Ansible reports any filter's exception with its text."""

DEFAULT_COLOUR_MATCHER = 'colour="%s"'


def serving_selector(selector: str, serving: dict[str, Any] | None, release_label: str | None = "",
                     colour_matcher: str | None = DEFAULT_COLOUR_MATCHER) -> str:
    serving = serving or {}
    matcher = colour_matcher or DEFAULT_COLOUR_MATCHER
    if matcher.count("%s") != 1 or matcher.replace("%s", "").count("%"):
        raise ColourMatcherError(f"colour matcher {matcher!r} must hold %s once, where the colour's name goes "
                                 f"(as colour=\"%s\"), and no other %")
    parts = [selector.strip().strip(",")] if selector and selector.strip() else []
    if serving.get("colour"):
        parts.append(matcher % serving["colour"])
    if release_label and serving.get("release"):
        parts.append(f'{release_label}="{serving["release"]}"')
    return ",".join(parts)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"serving_selector": serving_selector}

"""The serving_selector filter: the selector the gate measures a serving release with."""

from __future__ import annotations

import importlib.util

from helpers import ROOT

_spec = importlib.util.spec_from_file_location("serving_filter", ROOT / "plugins" / "filter" / "serving.py")
assert _spec and _spec.loader
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
serving_selector = _module.serving_selector


def test_compose_adds_the_colour_and_the_release() -> None:
    assert (serving_selector('job="erni-ki",environment="production"', {"release": "1.2.3", "colour": "green"},
                             "version")
            == 'job="erni-ki",environment="production",colour="green",version="1.2.3"')


def test_kubernetes_has_no_colour() -> None:
    assert (serving_selector('job="erni-ki",platform="kubernetes"', {"release": "1.2.3", "target": "kubernetes"},
                             "version")
            == 'job="erni-ki",platform="kubernetes",version="1.2.3"')


def test_without_a_release_label_the_release_is_not_added() -> None:
    assert serving_selector('job="x"', {"release": "1.2.3", "colour": "blue"}, "") == 'job="x",colour="blue"'
    assert serving_selector('job="x"', {"release": "1.2.3"}, None) == 'job="x"'


def test_nothing_serving_leaves_the_selector_alone() -> None:
    assert serving_selector('job="x",', None, "version") == 'job="x"'
    assert serving_selector("", {"colour": "blue"}, "") == 'colour="blue"'


def test_the_colour_shows_as_the_inventory_says() -> None:
    # ERNI-KI: cAdvisor's series name the container, there is no colour label
    assert (serving_selector('job="cadvisor"', {"release": "1.2.3", "colour": "green"}, "",
                             'name="erni-ki-production-%s"')
            == 'job="cadvisor",name="erni-ki-production-green"')


def test_a_colour_matcher_without_its_placeholder_is_refused_naming_it() -> None:
    import pytest

    for bad in ('name="erni-ki-blue"', 'name="%s-%s"', 'x="%d%s"'):
        with pytest.raises(ValueError, match="must hold %s once"):
            serving_selector('job="x"', {"colour": "blue"}, "", bad)

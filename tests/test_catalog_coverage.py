"""Every event type the vendors document is either handled or ignored with a reason."""

import json
import re
from pathlib import Path

import pytest

from events import sources

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def pdk_topics() -> set[str]:
    seed = (SHARED / "seeds" / "002_8afbe2e1e164ae54.txt").read_text()
    return set(re.findall(r'"topic":\s*"([^"]+)"', seed))


def spk_types() -> set[str]:
    schemas = json.loads((SHARED / "vendor-docs" / "smartphonekey" / "event-schemas.json").read_text())
    return set(schemas["events"]) | {"Shadow Update"}


def seam_types() -> set[str]:
    return set(json.loads((SHARED / "vendor-docs" / "seam" / "event-types.json").read_text()))


CATALOGS = {"pdk": pdk_topics, "spk": spk_types, "seam": seam_types}
DOCUMENTED_COUNTS = {"pdk": 70, "spk": 71, "seam": 108}


@pytest.mark.parametrize("source", sorted(CATALOGS))
def test_catalog_is_read_whole(source):
    assert len(CATALOGS[source]()) == DOCUMENTED_COUNTS[source]


@pytest.mark.parametrize("source", sorted(CATALOGS))
def test_every_documented_type_is_handled_or_ignored(source):
    module = sources.get(source)
    missing = sorted(CATALOGS[source]() - module.HANDLERS.keys() - module.IGNORED.keys())
    assert missing == [], f"{source}: neither handled nor ignored: {missing}"


@pytest.mark.parametrize("source", sorted(CATALOGS))
def test_no_type_is_both_handled_and_ignored(source):
    module = sources.get(source)
    assert module.HANDLERS.keys() & module.IGNORED.keys() == set()


@pytest.mark.parametrize("source", sorted(CATALOGS))
def test_every_ignored_type_says_why(source):
    module = sources.get(source)
    assert all(isinstance(reason, str) and len(reason) > 10 for reason in module.IGNORED.values())


@pytest.mark.parametrize("source", sorted(CATALOGS))
def test_nothing_is_mapped_that_the_vendor_does_not_document(source):
    module = sources.get(source)
    assert sorted((module.HANDLERS.keys() | module.IGNORED.keys()) - CATALOGS[source]()) == []

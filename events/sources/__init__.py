"""The registry of vendor modules: the only place that lists the vendors.

Each module answers the same questions (see ``events.sources.base``):
``authenticate(inbound, endpoint)``, ``identify(inbound)``, ``validate(event_type, payload)``,
``endpoint_problems(endpoint)``, ``describe_verification(endpoint)``, ``secret_headers(endpoint)``,
``sign(endpoint, body)`` (how the vendor would sign, for ``send_fixture``), and the ``HANDLERS``
and ``IGNORED`` tables.
"""

from types import ModuleType

from events.sources import pdk, seam, spk

MODULES: dict[str, ModuleType] = {module.NAME: module for module in (pdk, spk, seam)}
CHOICES = [(module.NAME, module.LABEL) for module in MODULES.values()]


def get(name: str) -> ModuleType | None:
    return MODULES.get(name)


def known_event_types() -> set[str]:
    """Every event type some vendor module handles or deliberately ignores."""
    return {event_type for module in MODULES.values() for event_type in (*module.HANDLERS, *module.IGNORED)}

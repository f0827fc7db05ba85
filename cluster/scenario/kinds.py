"""The table of step kinds: every ``steps_*`` module, listed once.

A module that defines step kinds exports ``STEPS`` (name -> :class:`StepKind`); add it to
``MODULES`` here. The runner reads :data:`EXTRA_STEPS`; nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from cluster.scenario import steps_certops, steps_doors, steps_faults, steps_ocsp, steps_phones, steps_time
from cluster.scenario.base import StepKind

BUILTIN = ("ca", "upload", "delete", "stop", "start", "wait", "advance", "resync", "list", "expect")

MODULES = (
    steps_certops,  # csr, sign, upload_identity, regen, restart, param, authz_regen, token, exchange, expect_*
    steps_doors,  # ssh:, rest: (cluster.frontdoors)
    steps_faults,  # crash, partition, heal, faults, broker, burst, rogue, expect_acknowledged, expect_rejected
    steps_ocsp,  # ocsp:, revoke:, responder:, expect_ocsp: ...
    steps_time,  # monitor:, expect_alarms:, expect_mails:, expect_monitor:
    steps_phones,  # phones:, ctl:, backup:, trust_identity:, link:, expect: {phones|link: ...}
)


def _table() -> Mapping[str, StepKind]:
    table: dict[str, StepKind] = {}
    for module in MODULES:
        for name, kind in module.STEPS.items():
            if name in BUILTIN or name in table:
                raise ValueError(f"step kind '{name}' is defined twice ({module.__name__})")
            table[name] = kind
    return MappingProxyType(table)


EXTRA_STEPS: Mapping[str, StepKind] = _table()
# ``expect:`` with one of these keys is that step kind's check (``expect: {phones: all, state: registered}``)
EXPECT_KEYS: Mapping[str, str] = MappingProxyType(dict(steps_phones.EXPECT_KEYS))

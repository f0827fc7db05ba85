"""The ``certsim`` command line (click + rich): one module per verb group, each registering onto
:data:`cluster.cli.app.main`. Every verb goes through the one control path; the lab, the bus and the
scenario runner load inside the verbs that use them, and rich on the first print, so ``certsim --help`` costs
only click."""

from __future__ import annotations

from cluster.cli import (  # noqa: F401 - each module registers its verbs on main
    ca,
    cert,
    classroom,
    clock,
    csr,
    fault,
    key,
    keys,
    lab,
    monitor,
    node,
    ocsp,
    param,
    phones,
    scenarios,
    service,
)
from cluster.cli.app import main

__all__ = ["main"]

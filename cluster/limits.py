"""File descriptors a lab process needs, checked before anything starts (``ulimit -n``).

Measured on this machine (``/proc/self/fd`` around ``Lab.start``, 2 and 8 nodes): every node holds its
SQLite database with its ``-wal`` and ``-shm`` files (3), its bus socket (1) and its log (1); the embedded
broker holds the server side of every node's socket (+1 per node); open front doors listen for SSH and
HTTPS (+2 per node) and each session holds one more while it lasts. A process adds a fixed base: stdio,
the event loop, the control client, the SMTP sink and OCSP responder, the broker's listener.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from node.errors import Unavailable

FDS_PROCESS = 64  # stdio, event loop, control client, SMTP sink, OCSP responder, broker listener, slack
FDS_NODE = 5  # database + -wal + -shm, bus socket, node log
FDS_NODE_EMBEDDED_BROKER = 1  # the broker's end of the node's bus socket, when the broker runs in-process
FDS_NODE_DOORS = 4  # SSH and HTTPS listeners, plus one session on each


@dataclass(frozen=True)
class FdBudget:
    nodes: int
    per_node: int
    needed: int

    def explain(self) -> str:
        return f"{self.nodes} nodes x {self.per_node} + {FDS_PROCESS} for the process"


def fds_needed(nodes: int, *, embedded_broker: bool, front_doors: bool) -> FdBudget:
    """The descriptors one process running ``nodes`` nodes needs (see the module docstring)."""
    per_node = FDS_NODE + (FDS_NODE_EMBEDDED_BROKER if embedded_broker else 0) + (FDS_NODE_DOORS if front_doors else 0)
    return FdBudget(nodes, per_node, FDS_PROCESS + nodes * per_node)


def ensure_fd_limit(budget: FdBudget) -> int:
    """Raise the soft limit up to the hard one when that is enough; otherwise refuse, before anything starts,
    with the number the lab needs. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= budget.needed:
        return soft
    if hard == resource.RLIM_INFINITY or hard >= budget.needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (budget.needed, hard))
        return budget.needed
    raise Unavailable(
        f"this lab needs about {budget.needed} file descriptors ({budget.explain()}) but 'ulimit -n' allows "
        f"{soft} (hard limit {hard}); raise it (ulimit -n {budget.needed}) or spread the nodes over more "
        "processes (--workers, or 'certsim node run' on an external broker)"
    )

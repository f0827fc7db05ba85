"""The ``certsim`` group every verb module adds its commands to (click only: nothing heavy loads here)."""

from __future__ import annotations

import atexit
import gc

import click

from cluster import __version__

# A certsim process leaves its objects to the operating system: at exit the interpreter's last collections
# would walk everything the imports made (~40-50 ms after 'lab up' on a 2-core machine, each time a user waits
# for the prompt). Frozen, they are out of the collector's reach; output is flushed and atexit hooks run as usual.
atexit.register(gc.freeze)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="certsim")
def main() -> None:
    """certsim: a Cisco Unified CM / IM and Presence certificate-management lab.

    Every simulated server is an agent with its own SQLite trust stores; trust changes
    travel over MQTT by the product's replication rules (R-REPL-1..9 in the README).

    \b
    Start here:
      certsim demo                       four nodes, the quickstart scenario, tables, verdict
      certsim run deletion-rules         run a shipped scenario (or a path to your own)
      certsim lab up scenarios/labs/demo.yaml; certsim lab status; certsim cert list --node cucm-pub
    """

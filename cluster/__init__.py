"""A whole lab: lab files, brokers, running agents, the lab CA, scenarios, results and the CLI."""

__version__ = "0.1.0"  # the package version (pyproject reads it): certsim --version needs no importlib.metadata

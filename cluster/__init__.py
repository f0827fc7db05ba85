"""A whole lab: lab files, brokers, running agents, the lab CA, scenarios, results and the CLI."""

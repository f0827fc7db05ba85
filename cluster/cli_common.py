"""What every CLI module shares: consoles, error handling, JSON output, common options, the request
to a running lab. ``cluster.cli`` and ``cluster.cli_certops`` both import it (neither imports the other)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Iterator
from functools import wraps
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import click
from rich.console import Console

from cluster import running as rl
from cluster.control import DEFAULT_TIMEOUT_S
from cluster.labfile import LabFileError
from cluster.scenario import ScenarioError
from cluster.userfiles import UserFileError
from node.errors import CertsimError

console = Console()
err = Console(stderr=True)
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> None:
    # soft_wrap: one line however long, never wrapped at 80 columns when stderr is not a terminal (scripts read it)
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False, markup=True, soft_wrap=True)
    sys.exit(code)


def handles_errors(func: F) -> F:
    """Turn our errors into one clear line on stderr and a non-zero exit, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CertsimError as exc:
            fail(exc.message.replace("[", r"\["))
        except (LabFileError, ScenarioError, UserFileError) as exc:
            fail(str(exc).replace("[", r"\["), code=2)
        except KeyboardInterrupt:
            fail("interrupted", code=130)

    return wrapper  # type: ignore[return-value]


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def on_node(
    lab_name: str | None,
    lab_dir: Path | None,
    node: str,
    op: str,
    args: dict[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """One request to a node (or ``@lab``) of the running lab."""
    running = rl.find_running(lab_name, lab_dir)

    async def go() -> Any:
        async with rl.connect(running) as client:
            return await client.request(node, op, args, timeout=timeout)

    return run_async(go())


node_option = click.option("--node", required=True, metavar="NODE", help="The node to act on.")
lab_option = click.option(
    "--lab", "lab_name", metavar="NAME", help="Which running lab (default: the only one running)."
)
lab_dir_option = click.option(
    "--lab-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Lab directory (default: $CERTSIM_HOME/labs/<lab>, CERTSIM_HOME defaults to ~/.certsim).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of tables.")


def cli_modules() -> Iterator[ModuleType]:
    """The loaded ``cluster.cli`` (or ``__main__`` under ``python -m cluster.cli``) that verb modules
    register onto; they never import it, so a second copy never gets the verbs instead."""
    for name in ("cluster.cli", "__main__"):
        module = sys.modules.get(name)
        if module is not None and isinstance(getattr(module, "main", None), click.Group) and hasattr(module, "cert"):
            yield module

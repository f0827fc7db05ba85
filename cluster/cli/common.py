"""What every CLI module shares: consoles, error handling, JSON output, the option stacks, the request
to a running lab.

Kept light on purpose: importing this module (and every verb module) pulls in click only (rich loads on
the first print), so ``certsim --help`` answers at once; each verb imports the lab, broker and scenario
machinery it needs when it runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import click

from node.errors import CertsimError

if TYPE_CHECKING:
    from rich.console import Console

NOT_A_TERMINAL_WIDTH = 10_000  # scripts read our output: no wrapping, no truncated table values


def _console(*, stderr: bool) -> Console:
    """A console that never interprets text as markup (certificate text is untrusted: '[/]' in a CN
    must print as it is, not style or crash the output) and, when the stream is not a terminal,
    never wraps a line or truncates a table value at 80 columns."""
    from rich.console import Console  # noqa: PLC0415 - rich loads on the first print, not for --help/--version

    stream = sys.stderr if stderr else sys.stdout
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return Console(stderr=stderr, markup=False, width=None if terminal else NOT_A_TERMINAL_WIDTH)


class _OnFirstUse:
    """A console made when first used: ``certsim --help`` and ``--version`` never import rich."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._made: Console | None = None

    def made(self) -> Console:
        if self._made is None:
            self._made = _console(stderr=self._stderr)
        return self._made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.made(), name)

    # dunders skip __getattr__: rich's Progress and Live enter the console as a context manager
    def __enter__(self) -> Console:
        return self.made().__enter__()

    def __exit__(self, *exc: object) -> None:
        self.made().__exit__(*exc)


console = cast("Console", _OnFirstUse(stderr=False))
err = cast("Console", _OnFirstUse(stderr=True))
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

LAB_TARGET = "@lab"  # cluster.control.LAB_TARGET (the lab controller), spelled here to keep the bus off --help
CERTOPS_TIMEOUT_S = 60.0  # a certificate operation may generate RSA 4096 keys: allow it a minute


def fail(message: str, code: int = 1) -> None:
    # soft_wrap: one line however long, never wrapped at 80 columns when stderr is not a terminal (scripts read it)
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False, markup=True, soft_wrap=True)
    sys.exit(code)


def _input_errors() -> tuple[type[BaseException], ...]:
    """Lab-file and scenario errors (exit 2). Only the loaded ones: an error class whose module was
    never imported cannot have been raised, and importing the scenario runner here would cost every verb."""
    kinds: list[type[BaseException]] = []
    for module, name in (
        ("cluster.labfile", "LabFileError"),
        ("cluster.scenario", "ScenarioError"),
        ("cluster.userfiles", "UserFileError"),
    ):
        kind = getattr(sys.modules.get(module), name, None)
        if isinstance(kind, type) and issubclass(kind, BaseException):
            kinds.append(kind)
    return tuple(kinds)


def handles_errors(func: F) -> F:
    """Turn our errors into one clear line on stderr and a non-zero exit, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CertsimError as exc:
            fail(exc.message.replace("[", r"\["))
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        except Exception as exc:
            if isinstance(exc, _input_errors()):
                fail(str(exc).replace("[", r"\["), code=2)
            raise
        return None

    return wrapper  # type: ignore[return-value]


def read_user_bytes(path: Path, kind: Literal["certificate", "csr"]) -> bytes:
    """A certificate or CSR file a user names ('-': standard input), through the checked loader."""
    from cluster import userfiles  # noqa: PLC0415

    return userfiles.read_bytes(path, kind)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio  # noqa: PLC0415 - only verbs that talk to a lab need the event loop

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
    timeout: float | None = None,
) -> Any:
    """One request to a node (or ``@lab``) of the running lab (``timeout``: the control path's default)."""
    from cluster import running as rl  # noqa: PLC0415 - the bus client only for verbs that talk to a lab
    from cluster.control import DEFAULT_TIMEOUT_S  # noqa: PLC0415

    wait = DEFAULT_TIMEOUT_S if timeout is None else timeout

    running = rl.find_running(lab_name, lab_dir)

    async def go() -> Any:
        async with rl.connect(running) as client:
            return await client.request(node, op, args, timeout=wait)

    return run_async(go())


def certops_request(lab_name: str | None, lab_dir: Path | None, node: str, op: str, args: dict[str, Any]) -> Any:
    """A certificate operation may generate RSA 4096 keys: allow it a minute."""
    return on_node(lab_name, lab_dir, node, op, args, timeout=CERTOPS_TIMEOUT_S)


def write_output(data: bytes, output: Path | None) -> None:
    """Downloaded material to a file or stdout (cluster.views.write_output)."""
    from cluster.views import write_output as write  # noqa: PLC0415 - views pulls in the scenario types

    write(data, output, err)


def door_address(info: dict[str, Any] | None, kind: str) -> str:
    listener = (info or {}).get(kind)
    if not listener:
        return "-"
    fallback = " (fallback)" if listener.get("note") else ""
    return f"{listener['address']}{fallback}"


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
store_option = click.option(
    "--store", required=True, metavar="STORE", help="Trust store (e.g. tomcat-trust) or identity unit."
)
unit_option = click.option("--unit", required=True, metavar="UNIT", help="Identity unit, e.g. tomcat or CallManager.")
smtp_option = click.option(
    "--smtp",
    metavar="URL",
    default=None,
    help="smtp://host:port receives the expiry monitor's mails (default: the lab's own SMTP sink on loopback).",
)
broker_option = click.option(
    "--broker",
    metavar="URL",
    default=None,
    help="mqtt://host:port uses that MQTT 3.1.1 broker (mosquitto, EMQX); 'mosquitto' starts a private one"
    " (scenarios may restart it); default: the embedded broker.",
)


def running_lab_options(*, json: bool = False) -> Callable[[F], F]:
    """The stack every verb on a running lab takes: --lab, --lab-dir (and --json), errors as one line."""

    def wrap(func: F) -> F:
        func = handles_errors(func)
        if json:
            func = json_option(func)
        return lab_option(lab_dir_option(func))

    return wrap

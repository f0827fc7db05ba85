"""Human views (rich tables) of what the CLI prints; ``--json`` bypasses them."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape as markup_escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from node.safetext import safe_text

if TYPE_CHECKING:  # types only: the CLI's table verbs must not load the scenario runner
    from cluster.runs import RunReport
    from cluster.scenario import StepResult

STATUS_STYLE = {"ok": "green", "failed": "bold red", "error": "bold red", "unknown": "yellow"}
VERDICT_STYLE = {"valid": "bold green", "invalid": "bold red", "unknown": "bold yellow"}


def write_output(data: bytes, output: Path | None, err: Console) -> None:
    """Write downloaded material to ``output``, or to stdout when no file is given (PEM is text)."""
    if output is None:
        sys.stdout.write(data.decode())
        return
    output.write_bytes(data)
    err.print(f"wrote {output} ({len(data)} bytes)")


def step_line(step: StepResult) -> Text:
    """One line per step; styled with Text spans, never markup, so no detail text can restyle it."""
    style = STATUS_STYLE.get(step.status, "")
    mark = {"ok": "✓", "failed": "✗", "error": "!", "unknown": "?"}.get(step.status, "·")
    line = Text.assemble((mark, style), f" step {step.index:>2} {step.kind:<7}")
    if step.rule:
        line.append(" ").append(step.rule, style="cyan")
    return line.append(f" {safe_text(step.detail)}")


def trust_tables(stores: Mapping[str, Sequence[Mapping[str, Any]]], roles: Mapping[str, str]) -> list[Table]:
    """One table per node: each non-empty trust store with its certificates."""
    tables = []
    for node, rows in stores.items():
        table = Table(title=f"{node} ({roles.get(node, '?')}) trust stores", title_justify="left", expand=False)
        table.add_column("store", style="cyan", no_wrap=True)
        table.add_column("#", justify="right")
        table.add_column("certificates")
        by_store: dict[str, list[str]] = {}
        for r in rows:
            by_store.setdefault(str(r["store"]), []).append(str(r["name"]))
        for store in sorted(by_store):
            table.add_row(store, str(len(by_store[store])), "\n".join(sorted(by_store[store])))
        tables.append(table)
    return tables


def print_report(console: Console, report: RunReport) -> None:
    result = report.result
    expectations = result.expectations
    held = sum(1 for s in expectations if s.status == "ok")
    style = VERDICT_STYLE[result.verdict]
    rules = sorted({s.rule for s in result.steps if s.rule and s.status == "ok"})
    body = Text.assemble(
        (result.verdict.upper(), style),
        f"  {held}/{len(expectations)} expectations held  ·  {report.wall_seconds:.1f} s  ·  broker {report.broker}\n"
        f"rules shown: {', '.join(rules) or 'none'}\n"
        f"results: {report.results_dir}\n"
        f"report: {report.results_dir / 'report.html'}",
    )
    if result.reason:
        body.append(f"\n{safe_text(result.reason)}", style=style)
    console.print(Panel(body, title=f"scenario {result.scenario}", expand=False))


def status_table(statuses: Mapping[str, Mapping[str, Any] | None], lab: str, broker: str) -> Table:
    table = Table(title=f"lab {lab} on {broker}", title_justify="left")
    for col in ("node", "role", "fqdn", "state", "trust stores (non-empty)", "outbox"):
        table.add_column(col, no_wrap=col != "trust stores (non-empty)")
    for node, st in statuses.items():
        if st is None:
            table.add_row(node, "", "", Text("down", style="red"), "", "")
            continue
        role = st["role"] + (" publisher" if st["publisher"] else "")
        state = Text("connected", style="green") if st["connected"] else Text("disconnected", style="yellow")
        counts = ", ".join(f"{s} {n}" for s, n in st["stores"].items() if n)
        table.add_row(node, role, st["fqdn"], state, counts, str(st["outbox"]))
    return table


def cert_table(rows: Sequence[Mapping[str, Any]], node: str) -> Table:
    table = Table(title=f"certificates on {node}", title_justify="left")
    ocsp = any(r.get("ocsp") for r in rows)  # the column shows only where OCSP is on (R-OCSP-3)
    for col in ("store", "name", "usage", "key", "issuer", "not after", *(("OCSP",) if ocsp else ()), "from", "notes"):
        table.add_column(col, no_wrap=col in ("store", "usage", "key", "not after", "OCSP"))
    for r in rows:
        source = r.get("origin") or r.get("source") or ""
        notes = [*r.get("flags", [])]
        if r.get("description"):  # Description(friendly name) given at upload: untrusted text
            notes.insert(0, "description: " + markup_escape(safe_text(str(r["description"]))))
        if r.get("restart_pending"):
            notes.append("restart pending: " + ", ".join(r["restart_pending"]))
        table.add_row(
            str(r["store"]),
            str(r["name"]),
            str(r["usage"]),
            f"{r['key_type']}-{r['key_bits']}",
            str(r.get("issuer_cn") or r.get("issuer")),
            str(r["not_after"]),
            *((str(r.get("ocsp") or "-"),) if ocsp else ()),
            str(source),
            "; ".join(notes),
        )
    return table

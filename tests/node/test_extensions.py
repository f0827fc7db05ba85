"""Node extensions plug into the agent through one explicit table (issue 10 item 1): no extension
module imports the agent at run time (no import circle, the agent's private names stay private),
and every extension module is in ``node.agent.EXTENSIONS``."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import node
from node import agent

NODE_DIR = Path(node.__file__).parent
EXTENSION_MODULES = sorted(p for p in NODE_DIR.glob("agent_*.py"))


def _runtime_imports(tree: ast.Module) -> list[str]:
    """Modules imported at run time: top-level imports outside ``if TYPE_CHECKING:``."""
    found: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            continue
        for sub in ast.walk(stmt):
            if isinstance(sub, ast.ImportFrom) and sub.module:
                found.append(sub.module)
            elif isinstance(sub, ast.Import):
                found.extend(alias.name for alias in sub.names)
    return found


def test_no_extension_imports_the_agent_at_run_time() -> None:
    assert EXTENSION_MODULES, "no extension modules found"
    offenders = {
        p.name: mods
        for p in EXTENSION_MODULES
        if (mods := [m for m in _runtime_imports(ast.parse(p.read_text(encoding="utf-8"))) if m == "node.agent"])
    }
    assert offenders == {}


def test_the_checker_sees_a_runtime_import_of_the_agent() -> None:
    """The check above can fail: a module importing the agent's private names is caught."""
    bad = ast.parse("from node.agent import NodeAgent, _b64_arg\nif TYPE_CHECKING:\n    import node.agent\n")
    assert _runtime_imports(bad) == ["node.agent"]


def test_every_extension_module_is_in_the_table() -> None:
    listed = {ext.name for ext in agent.EXTENSIONS}
    modules = {p.stem for p in EXTENSION_MODULES}
    assert len(listed) == len(agent.EXTENSIONS) == len(modules), (listed, modules)
    for module in modules:
        assert importlib.import_module(f"node.{module}").EXTENSION in agent.EXTENSIONS


def test_every_message_kind_counts_its_deliveries() -> None:
    """A node's status counts each delivered message under ``received:<kind>``, the extensions'
    kinds (e.g. a certificate operation's state) as much as the agent's own; the names are made once."""
    extension_kinds = {kind for e in agent.EXTENSIONS for kind in e.messages}
    assert extension_kinds, "no extension brings a message kind: this test checks nothing"
    assert set(agent._RECEIVED) == set(agent.NodeAgent._handlers) >= extension_kinds
    assert all(name == f"received:{kind}" for kind, name in agent._RECEIVED.items())

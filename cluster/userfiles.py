"""One checked loader for every file a user gives: lab, scenario, certificate, CSR, CA folder.

Every user file is hostile until checked. Before anything parses it, the loader bounds its size
(read at most ``limit + 1`` bytes, so a 60 MB file or an endless pipe costs nothing), requires
UTF-8 for text kinds (naming the byte offset of the first bad byte), and parses YAML with a
loader that refuses duplicate keys, nesting deeper than :data:`MAX_DEPTH`, and documents whose
aliases would expand to more than :data:`MAX_NODES` nodes (a "billion laughs" alias bomb fails
in milliseconds instead of after gigabytes). Errors are :class:`UserFileError`: one line that
names the file and the problem; the CLI prints it and exits 2 ("could not decide").
"""

from __future__ import annotations

import io
from collections.abc import Hashable
from pathlib import Path
from typing import Any, BinaryIO, Literal

import yaml

from node.safetext import safe_text

Kind = Literal["lab", "scenario", "certificate", "csr", "ca"]

#: Largest file of each kind. Labs and scenarios are hand-written (a scenario may inline a few
#: PEM certificates); a certificate upload is bounded like the product's upload page; a CA folder
#: file holds one chain or one key.
MAX_BYTES: dict[str, int] = {
    "lab": 256 * 1024,
    "scenario": 2 * 1024 * 1024,
    "certificate": 1024 * 1024,
    "csr": 64 * 1024,
    "ca": 256 * 1024,
}
MAX_DEPTH = 32  # nesting of YAML collections; real labs and scenarios use 5 or fewer
MAX_NODES = 200_000  # YAML nodes after alias expansion (the shipped scenarios have a few thousand)
MAX_CA_FILES = 1000  # certificates in one CA folder


class UserFileError(ValueError):
    """A user file that cannot be used; one line naming the file and the problem (escaped: node.safetext)."""

    def __init__(self, message: str) -> None:
        super().__init__(safe_text(message))


def read_bytes(path: Path | str, kind: Kind, stream: BinaryIO | None = None) -> bytes:
    """The file's bytes (``-`` or a given stream: read it), refused above the kind's size limit."""
    limit = MAX_BYTES[kind]
    where = str(path)
    try:
        if stream is not None or where == "-":
            return _bounded(
                stream if stream is not None else _stdin(), limit, "standard input" if where == "-" else where
            )
        p = Path(path)
        if p.is_dir():
            raise UserFileError(f"{where}: is a folder, not a {kind} file")
        size = p.stat().st_size
        if size > limit:
            raise UserFileError(f"{where}: {size:,} bytes; a {kind} file has at most {limit:,} bytes")
        with p.open("rb") as handle:  # a FIFO or device reports no size: read at most limit + 1
            return _bounded(handle, limit, where)
    except OSError as exc:
        raise UserFileError(f"cannot read {kind} file {where}: {exc.strerror or exc}") from None


def _stdin() -> BinaryIO:
    import sys  # noqa: PLC0415 - only the '-' path reads standard input

    return sys.stdin.buffer


def _bounded(handle: BinaryIO, limit: int, where: str) -> bytes:
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise UserFileError(f"{where}: more than {limit:,} bytes; the limit is {limit:,} bytes")
    return data


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 text (a leading BOM allowed), or an error naming the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserFileError(
            f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}, line {line})"
        ) from None


def read_text(path: Path | str, kind: Kind) -> str:
    return decode_text(read_bytes(path, kind), str(path))


def load_yaml(text: str, where: str) -> Any:
    """Parse one YAML document with the checked loader (safe tags only, bounded, no duplicate keys)."""
    loader: _CheckedLoader | None = None
    try:
        loader = _CheckedLoader(io.StringIO(text))  # its reader refuses control characters already here
        return loader.get_single_data()
    except UserFileError as exc:
        raise UserFileError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UserFileError(f"{where}: not valid YAML ({_one_line(exc)})") from None
    except RecursionError:
        raise UserFileError(f"{where}: nested deeper than {MAX_DEPTH} levels") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_file(path: Path | str, kind: Kind) -> Any:
    return load_yaml(read_text(path, kind), str(path))


def ca_folder_files(directory: Path) -> list[Path]:
    """The ``*.pem`` files of a CA folder, refused above :data:`MAX_CA_FILES`."""
    try:
        files = sorted(p for p in directory.glob("*.pem") if p.is_file())
    except OSError as exc:
        raise UserFileError(f"cannot read CA folder {directory}: {exc.strerror or exc}") from None
    if len(files) > MAX_CA_FILES:
        raise UserFileError(f"{directory}: {len(files):,} certificates; a CA folder holds at most {MAX_CA_FILES:,}")
    return files


def _one_line(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem or exc.context} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def _line(mark: Any) -> str:
    return "?" if mark is None else str(mark.line + 1)


class _CheckedLoader(yaml.SafeLoader):
    """SafeLoader that counts the expanded document while composing it, bounds nesting, and refuses
    duplicate mapping keys (YAML 1.2 forbids them; PyYAML silently keeps the last)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it expands to (aliases share nodes)
        self._keep: list[yaml.Node] = []  # keeps the nodes counted in _sizes alive while composing

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            if self._depth > MAX_DEPTH:
                raise UserFileError(f"nested deeper than {MAX_DEPTH} levels at line {_line(event.start_mark)}")
            if isinstance(event, yaml.AliasEvent):
                target = self.anchors.get(event.anchor)
                if target is not None and id(target) not in self._sizes:
                    raise UserFileError(f"alias '*{event.anchor}' refers to itself at line {_line(event.start_mark)}")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            self._count(node)
        return node

    def _count(self, node: yaml.Node) -> int:
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._sizes.get(id(child), 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
        self._sizes[id(node)] = size
        self._keep.append(node)
        if size > MAX_NODES:
            raise UserFileError(
                f"expands to more than {MAX_NODES:,} values (aliases of aliases?) at line {_line(node.start_mark)}"
            )
        return size

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                raise UserFileError(
                    f"a mapping key must be a plain value at line {_line(key_node.start_mark)}"
                ) from None
            if duplicate:
                raise UserFileError(f"duplicate key '{key}' at line {_line(key_node.start_mark)}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

"""The documentation that is built from the code (scripts/gen-docs runs it):

    gen_docs.py api DESCRIPTOR_SET OUT.md   the gRPC API reference: every
                                            service, RPC, message, field and
                                            enum value with its comment from
                                            protos/ (a descriptor set written
                                            with --include_source_info), who
                                            may call each RPC (payment-svc's
                                            METHOD_ROLES) and every error
                                            reason (payment-svc's error tree
                                            and its one gRPC mapping)
    gen_docs.py config PAGE.md              checks the configuration page
                                            against each process's settings
                                            code: the variables it reads and
                                            the defaults it uses

Both fail (exit 1) with the reason on stderr; `api` writes only its output.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "payments.v1"

# Paths in SourceCodeInfo: the field numbers of descriptor.proto.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE = 2
_SERVICE_METHOD = 2

FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    FDP.TYPE_DOUBLE: "double", FDP.TYPE_FLOAT: "float", FDP.TYPE_INT64: "int64",
    FDP.TYPE_UINT64: "uint64", FDP.TYPE_INT32: "int32", FDP.TYPE_FIXED64: "fixed64",
    FDP.TYPE_FIXED32: "fixed32", FDP.TYPE_BOOL: "bool", FDP.TYPE_STRING: "string",
    FDP.TYPE_BYTES: "bytes", FDP.TYPE_UINT32: "uint32", FDP.TYPE_SFIXED32: "sfixed32",
    FDP.TYPE_SFIXED64: "sfixed64", FDP.TYPE_SINT32: "sint32", FDP.TYPE_SINT64: "sint64",
}  # fmt: skip


class DocsError(Exception):
    """The documentation does not match the code."""


# -- the API reference --------------------------------------------------------


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    found: dict[tuple[int, ...], str] = {}
    for location in file.source_code_info.location:
        text = "\n".join(
            part.strip("\n")
            for part in (location.leading_comments, location.trailing_comments)
            if part.strip()
        )
        if text:
            found[tuple(location.path)] = text
    return found


def _prose(comment: str) -> str:
    """A proto comment as one Markdown paragraph (table cells cannot hold lines)."""
    return " ".join(line.strip() for line in comment.splitlines() if line.strip())


def _cell(text: str) -> str:
    return _prose(text).replace("|", "\\|")


def anchor(full_name: str) -> str:
    return full_name.lstrip(".").lower().replace(".", "-")


@dataclass(frozen=True)
class _Message:
    name: str  # without the package, nested ones dotted (Outer.Inner)
    proto: descriptor_pb2.DescriptorProto
    path: tuple[int, ...]
    comments: Mapping[tuple[int, ...], str]


@dataclass(frozen=True)
class _Enum:
    name: str
    proto: descriptor_pb2.EnumDescriptorProto
    path: tuple[int, ...]
    comments: Mapping[tuple[int, ...], str]


def _walk(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> tuple[list[_Message], list[_Enum]]:
    messages: list[_Message] = []
    enums: list[_Enum] = []

    def message(
        proto: descriptor_pb2.DescriptorProto, prefix: str, path: tuple[int, ...], c: Any
    ) -> None:
        name = f"{prefix}{proto.name}"
        messages.append(_Message(name, proto, path, c))
        for i, nested in enumerate(proto.nested_type):
            if not nested.options.map_entry:
                message(nested, f"{name}.", (*path, _MESSAGE_NESTED, i), c)
        for i, enum in enumerate(proto.enum_type):
            enums.append(_Enum(f"{name}.{enum.name}", enum, (*path, _MESSAGE_ENUM, i), c))

    for file in files:
        comments = _comments(file)
        for i, proto in enumerate(file.message_type):
            message(proto, "", (_FILE_MESSAGE, i), comments)
        for i, enum in enumerate(file.enum_type):
            enums.append(_Enum(enum.name, enum, (_FILE_ENUM, i), comments))
    return messages, enums


def _type_link(type_name: str, known: set[str]) -> str:
    name = type_name.lstrip(".")
    if name in known:
        short = name.removeprefix(PACKAGE + ".")
        return f"[{short}](#{anchor(name)})"
    return f"`{name}`"


def _field_type(
    field: descriptor_pb2.FieldDescriptorProto,
    owner: descriptor_pb2.DescriptorProto,
    known: set[str],
) -> str:
    if field.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM):
        entry = next(
            (
                n
                for n in owner.nested_type
                if n.options.map_entry and field.type_name.endswith(f".{n.name}")
            ),
            None,
        )
        if entry is not None and field.label == FDP.LABEL_REPEATED:
            key, value = entry.field
            return f"map<{_field_type(key, entry, known)}, {_field_type(value, entry, known)}>"
        base = _type_link(field.type_name, known)
    else:
        base = f"`{_SCALARS[field.type]}`"
    if field.label == FDP.LABEL_REPEATED:
        return f"repeated {base}"
    if field.proto3_optional:
        return f"optional {base}"
    return base


def _roles() -> Mapping[str, frozenset[Any]]:
    interceptors = importlib.import_module("payment_svc.entrypoints.interceptors")
    roles: Mapping[str, frozenset[Any]] = interceptors.METHOD_ROLES
    return roles


def _error_rows() -> list[tuple[str, str, str, str, str]]:
    """(reason, gRPC code, retry may help, ErrorInfo metadata, meaning) of
    every error payment-svc answers with, from its one error tree and its one
    mapping to gRPC statuses."""
    errors = importlib.import_module("payment_svc.domain.errors")
    mapping = importlib.import_module("payment_svc.entrypoints.errors")
    # Every domain module: an error defined beside its rules (webhook
    # dispatch's LeaseLost) is a subclass only once its module is imported,
    # and what happened to be imported before must not change the page.
    domain = importlib.import_module("payment_svc.domain")
    for info in pkgutil.walk_packages(domain.__path__, "payment_svc.domain."):
        importlib.import_module(info.name)
    code_pb2 = importlib.import_module("google.rpc.code_pb2")
    tree = _tree_descriptions(errors.__doc__ or "")
    metadata = _metadata_keys(inspect.getsource(mapping.to_grpc_status))
    abstract = {errors.PaymentsError, errors.RetryableError, errors.PermanentError}
    rows = []
    for cls in _subclasses(errors.PaymentsError):
        if cls in abstract:
            continue
        code = next((c for base, c in mapping._CODES if issubclass(cls, base)), code_pb2.INTERNAL)
        meaning = _prose(inspect.getdoc(cls) or "") if cls.__doc__ else tree.get(cls.__name__, "")
        keys = [k for name, ks in metadata.items() if _is_a(cls, errors, name) for k in ks]
        if cls is errors.InvalidArgument or issubclass(cls, errors.InvalidArgument):
            keys.append("(BadRequest field violations)")
        for reason in _reasons(cls):
            rows.append(
                (
                    f"`{reason}`",
                    f"`{code_pb2.Code.Name(code)}`",
                    "yes" if cls.retryable else "no",
                    ", ".join(f"`{k}`" if not k.startswith("(") else k for k in keys),
                    meaning.replace("|", "\\|"),
                )
            )
    return rows


def _subclasses(cls: type) -> Iterator[type]:
    yield cls
    for sub in cls.__subclasses__():
        yield from _subclasses(sub)


def _is_a(cls: type, module: Any, name: str) -> bool:
    base = getattr(module, name, None)
    return isinstance(base, type) and issubclass(cls, base)


def _reasons(cls: type) -> list[str]:
    """The reasons a class sets itself (`reason = ...`, `self.reason = a if
    ... else b`), else the one it inherits."""
    found: list[str] = []
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(cls)))):
        if isinstance(node, ast.Assign) and any(
            (isinstance(t, ast.Name) and t.id == "reason")
            or (isinstance(t, ast.Attribute) and t.attr == "reason")
            for t in node.targets
        ):
            found.extend(
                n.value
                for n in ast.walk(node.value)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)
            )
    return found or [str(cls.reason)]


def _tree_descriptions(doc: str) -> dict[str, str]:
    """The error tree the errors module opens with: `── Name   what it means`."""
    described: dict[str, str] = {}
    for line in doc.splitlines():
        match = re.search(r"── (\w+)\s*(.*)$", line)
        if match:
            described[match.group(1)] = match.group(2).strip()
    return described


def _metadata_keys(source: str) -> dict[str, list[str]]:
    """`if isinstance(exc, e.Name): metadata = {"key": ...}` in the mapping."""
    keys: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(textwrap.dedent(source))):
        if not (isinstance(node, ast.If) and isinstance(node.test, (ast.Call, ast.BoolOp))):
            continue
        call = node.test if isinstance(node.test, ast.Call) else node.test.values[0]
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "isinstance"):
            continue
        cls = call.args[1]
        name = cls.attr if isinstance(cls, ast.Attribute) else getattr(cls, "id", "")
        for stmt in node.body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Dict):
                keys[name] = [k.value for k in stmt.value.keys if isinstance(k, ast.Constant)]
    return keys


def api_reference(descriptor_set: Path) -> str:
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    files = sorted((f for f in fds.file if f.package == PACKAGE), key=lambda f: f.name)
    messages, enums = _walk(files)
    known = {f"{PACKAGE}.{m.name}" for m in messages} | {f"{PACKAGE}.{e.name}" for e in enums}
    roles = _roles()
    out = [
        "<!-- Generated by scripts/gen-docs from protos/payments/v1. DO NOT EDIT. -->",
        "",
        "# gRPC API reference",
        "",
        f"Proto package `{PACKAGE}` (`protos/payments/v1/`), generated from the protos'",
        "comments by `scripts/gen-docs`; `scripts/check` regenerates it and fails when",
        "it differs. Every call but health and reflection carries `authorization:",
        "Bearer <token>`; *who may call* is payment-svc's one authorization table",
        "(`METHOD_ROLES`). Errors are gRPC status codes with `google.rpc` details:",
        "an `ErrorInfo` (domain `payments.v1`) whose `reason` is listed under",
        "[Errors](#errors).",
        "",
        "## Services",
        "",
    ]
    for file in files:
        comments = _comments(file)
        for si, service in enumerate(file.service):
            full = f"{PACKAGE}.{service.name}"
            out += [f"### {service.name} {{ #{anchor(full)} }}", ""]
            if text := comments.get((_FILE_SERVICE, si)):
                out += [_prose(text), ""]
            for mi, method in enumerate(service.method):
                callers = roles.get(f"/{full}/{method.name}")
                who = ", ".join(sorted(r.value for r in callers)) if callers else "nobody"
                stream_in = "stream " if method.client_streaming else ""
                stream_out = "stream " if method.server_streaming else ""
                out += [
                    f"#### {method.name} {{ #{anchor(full + '.' + method.name)} }}",
                    "",
                    f"`rpc {method.name}({stream_in}{method.input_type.lstrip('.')}) returns"
                    f" ({stream_out}{method.output_type.lstrip('.')})`",
                    "",
                    f"Request {_type_link(method.input_type, known)}, response "
                    f"{_type_link(method.output_type, known)}. Who may call: {who}.",
                    "",
                ]
                if text := comments.get((_FILE_SERVICE, si, _SERVICE_METHOD, mi)):
                    out += [_prose(text), ""]
    out += ["## Messages", ""]
    for m in sorted(messages, key=lambda m: m.name):
        out += [f"### {m.name} {{ #{anchor(PACKAGE + '.' + m.name)} }}", ""]
        if text := m.comments.get(m.path):
            out += [_prose(text), ""]
        if not m.proto.field:
            out += ["No fields.", ""]
            continue
        out += ["| field | number | type | description |", "| --- | --- | --- | --- |"]
        for fi, field in enumerate(m.proto.field):
            note = _cell(m.comments.get((*m.path, _MESSAGE_FIELD, fi), ""))
            if field.HasField("oneof_index") and not field.proto3_optional:
                oneof = m.proto.oneof_decl[field.oneof_index].name
                note = f"(one of `{oneof}`) {note}".strip()
            out.append(
                f"| `{field.name}` | {field.number} | {_field_type(field, m.proto, known)} "
                f"| {note} |"
            )
        out.append("")
    out += ["## Enums", ""]
    for e in sorted(enums, key=lambda e: e.name):
        out += [f"### {e.name} {{ #{anchor(PACKAGE + '.' + e.name)} }}", ""]
        if text := e.comments.get(e.path):
            out += [_prose(text), ""]
        out += ["| value | number | description |", "| --- | --- | --- |"]
        for vi, value in enumerate(e.proto.value):
            note = _cell(e.comments.get((*e.path, _ENUM_VALUE, vi), ""))
            out.append(f"| `{value.name}` | {value.number} | {note} |")
        out.append("")
    out += [
        "## Errors",
        "",
        "Every error reason payment-svc answers with, from its one error tree",
        "(`payment_svc/domain/errors.py`) and its one mapping to gRPC statuses",
        "(`payment_svc/entrypoints/errors.py`). *Retry may help*: the status also",
        "carries a `RetryInfo`. An exception no rule maps is a bug: `INTERNAL` with",
        "the request id and no `ErrorInfo`.",
        "",
        "| reason | gRPC code | retry may help | ErrorInfo metadata | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    out += ["| " + " | ".join(row) + " |" for row in _error_rows()]
    return "\n".join(out).rstrip() + "\n"


# -- the configuration page, checked against the settings code ----------------

Build = Callable[[Mapping[str, str]], Any]


@dataclass(frozen=True)
class _Process:
    module: str
    # the settings objects built from the environment, and what each needs
    builds: tuple[str, ...]
    required: Mapping[str, str]


PROCESSES = {
    "payment-svc": _Process(
        "payment_svc.settings",
        ("Settings", "MigrationSettings"),
        {"DATABASE_URL": "postgresql://docs@127.0.0.1:1/docs"},
    ),
    "provider-sim": _Process("provider_sim.settings", ("SimSettings",), {}),
    "webhook-gateway": _Process("webhook_gateway.settings", ("Settings",), {}),
    "reconciler": _Process("reconciler.settings", ("Settings",), {}),
    # its replica id defaults to a fresh one a process: fixed, so builds compare
    "webhook-dispatcher": _Process(
        "webhook_dispatcher.settings", ("Settings",), {"WEBHOOK_DISPATCHER_ID": "docs"}
    ),
    "payments CLI": _Process("payments_cli.cli", (), {}),
}


def _sections(page: str) -> dict[str, list[tuple[str, str]]]:
    """`## name` -> the (variable, default cell) rows of its first table."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    in_table = False
    for line in page.splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
            in_table = False
        elif current is not None and line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            variable = re.fullmatch(r"`([A-Z][A-Z0-9_]*)`", cells[0])
            if variable is None:
                raise DocsError(f"one variable per row, in backquotes: {line}")
            current.append((variable.group(1), cells[1]))
            in_table = True
        elif in_table and not line.startswith("|"):
            current = None
    return sections


_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


def variables_read(module: Any) -> set[str]:
    """The environment variables a module reads."""
    return variables_read_source(inspect.getsource(module))


def _literal(cell: str) -> str | None:
    """The default when the cell starts with one literal value in backquotes
    (`10`, `127.0.0.1:50051`); None for prose such as (required), (none)."""
    match = re.match(r"`([^`]*)`(?:\s|$|\s*\()", cell + " ")
    return match.group(1) if match and " / " not in cell else None


def check_configuration(page_path: Path) -> list[str]:
    sections = _sections(page_path.read_text())
    problems: list[str] = []
    for process, spec in PROCESSES.items():
        rows = sections.get(process)
        if not rows:
            problems.append(f"{page_path}: no table under '## {process}'")
            continue
        module = importlib.import_module(spec.module)
        documented = [name for name, _ in rows]
        for name in sorted({n for n in documented if documented.count(n) > 1}):
            problems.append(f"{process}: {name} is listed twice")
        read = variables_read(module)
        for name in sorted(read - set(documented)):
            problems.append(f"{process}: the code reads {name}, the page does not list it")
        for name in sorted(set(documented) - read):
            problems.append(f"{process}: the page lists {name}, the code does not read it")
        for name, cell in rows:
            value = _literal(cell)
            if value is None:
                continue
            readers = [b for b in spec.builds if name in _reads(b, module)]
            if spec.builds and not readers and name in read:
                problems.append(f"{process}: no settings object reads {name}")
            for build_name in readers:
                build: Build = getattr(module, build_name).from_env
                base = dict(spec.required)
                if name in base:
                    continue
                try:
                    with_default = build({**base, name: value})
                except Exception as exc:  # a default the code refuses is a wrong default
                    problems.append(f"{process}: {name}={value!r} is refused: {exc}")
                    continue
                if with_default != build(base):
                    problems.append(
                        f"{process}: {name} default {value!r} is not what the code uses"
                    )
    return problems


def _reads(class_name: str, module: Any) -> set[str]:
    """The variables one settings class's from_env (and what it calls in the
    module) reads."""
    cls = getattr(module, class_name)
    names = variables_read_source(inspect.getsource(cls))
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            helper = getattr(module, node.func.id, None)
            if inspect.isfunction(helper) and helper.__module__ == module.__name__:
                names |= variables_read_source(inspect.getsource(helper))
    return names


def variables_read_source(source: str) -> set[str]:
    """Names passed to a call (env.get, a number parser, typer's envvar=),
    and PAYMENTS_ENV where the code asks is_production."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(textwrap.dedent(source))):
        if not isinstance(node, ast.Call):
            continue
        for v in [*node.args, *(k.value for k in node.keywords)]:
            if (
                isinstance(v, ast.Constant)
                and isinstance(v.value, str)
                and _ENV_NAME.fullmatch(v.value)
            ):
                names.add(v.value)
        if getattr(node.func, "id", "") == "is_production":
            names.add("PAYMENTS_ENV")
    return names


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 3 and argv[0] == "api":
            text = api_reference(Path(argv[1]))
            Path(argv[2]).write_text(text)
            return 0
        if len(argv) == 2 and argv[0] == "config":
            problems = check_configuration(Path(argv[1]))
            for problem in problems:
                print(f"gen-docs: {problem}", file=sys.stderr)
            return 1 if problems else 0
    except DocsError as exc:
        print(f"gen-docs: {exc}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

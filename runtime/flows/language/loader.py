"""Finds and loads flow files (the format is ``docs/flows.md``), strictly, into :mod:`.document` records.

Reading is split by concern: :mod:`.yaml_nodes` (typed readers of YAML nodes, YAML
errors explained), :mod:`.schema` (the sections of a flow file) and :mod:`.references`
(the names used across them). This module finds the files and checks what only the
whole set of files can tell: the same flow defined twice, and sub-flow calls
(``call: {flow: ...}``) to flows that are not loaded, with inputs for slots the called
flow does not declare, or calling each other in a circle.

Entry points: :func:`load_flow_file` (one file; raises the first error),
:func:`check_flow_file` (one file; every error and warning), :func:`load_flow_dirs`
and :func:`load_flow_paths` (many files: invalid ones are reported and skipped).

The last two also check the model providers that generate steps name, given the server
config's: a file naming one the config does not have is skipped with an error. With no
provider configured at all, nothing is refused (every generate step takes its failure route).

In a directory, every ``*.yaml``/``*.yml`` below it (sub-directories too, hidden files
and directories skipped) whose top level has a ``flow`` or a ``states`` key is a flow
file; other YAML files (a server config left there, say) are not flows and are skipped
without a word, listed in :attr:`FlowSet.skipped`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, ScalarNode

from confab.runtime.flows.language.document import CallSpec, FlowDocument
from confab.runtime.flows.language.schema import FlowReader
from confab.runtime.flows.language.yaml_nodes import FlowFileError, FlowWarning

__all__ = [
    "FLOW_SUFFIXES",
    "FlowCheck",
    "FlowFileError",
    "FlowSet",
    "FlowWarning",
    "check_flow_file",
    "load_flow_dirs",
    "load_flow_file",
    "load_flow_paths",
]

FLOW_SUFFIXES = (".yaml", ".yml")
_FLOW_KEYS = frozenset({"flow", "states"})


@dataclass(slots=True)
class FlowCheck:
    """Everything :func:`check_flow_file` found in one file."""

    path: str
    document: FlowDocument | None  # None when there are errors
    errors: list[FlowFileError] = field(default_factory=list)  # by line
    warnings: list[FlowWarning] = field(default_factory=list)  # by line
    flow_line: int = 0  # the line of the `flow:` key (where a duplicate flow is reported)
    calls: list[tuple[CallSpec, int, str]] = field(default_factory=list)  # (call, line, where)
    providers: list[tuple[str, int, str]] = field(default_factory=list)  # (model provider, line, where)
    generations: int = 0  # generate steps and generative fallbacks: how often the flow may call a model


@dataclass(slots=True)
class FlowSet:
    """The flows of many files: the valid ones, and what was wrong with the others."""

    flows: list[FlowDocument] = field(default_factory=list)
    errors: list[FlowFileError] = field(default_factory=list)
    warnings: list[FlowWarning] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # every flow file looked at, in load order
    skipped: list[str] = field(default_factory=list)  # YAML files in a directory that are not flows
    calling_models: list[str] = field(default_factory=list)  # flow files with a generate step or fallback


def load_flow_file(path: Path) -> FlowDocument:
    """The flow in ``path``; raises the file's first :class:`FlowFileError` (by line).

    Warnings are dropped: use :func:`check_flow_file` to see them. Sub-flow calls are not
    checked (that needs the other files: :func:`load_flow_paths`).
    """
    check = check_flow_file(path)
    if check.document is None:
        raise check.errors[0]
    return check.document


def check_flow_file(path: Path) -> FlowCheck:
    """Read and validate ``path``: the document if it is valid, every error and warning."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return FlowCheck(name, None, [FlowFileError(name, 0, f"cannot read the file: {exc.strerror or exc}")])
    reader = FlowReader(name)
    document = reader.read(data)
    errors = sorted(reader.errors, key=lambda e: e.line)  # stable: one line's errors keep their order
    warnings = sorted(reader.warnings, key=lambda w: w.line)
    calls = [(spec, node.start_mark.line + 1, where) for spec, node, where in reader.calls]
    providers = [(provider, node.start_mark.line + 1, where) for provider, node, where in reader.providers]
    return FlowCheck(
        name,
        None if errors else document,
        errors,
        warnings,
        reader.flow_line,
        calls,
        providers,
        reader.generations,
    )


def is_flow_file(path: Path) -> bool:
    """Whether a YAML file in a flow directory is meant as a flow (or cannot be told: unreadable)."""
    try:
        root = yaml.compose(path.read_bytes().decode("utf-8-sig"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return True  # a broken file is reported as the flow it probably is
    if not isinstance(root, MappingNode):
        return root is None
    keys = {key.value for key, _ in root.value if isinstance(key, ScalarNode)}
    return bool(keys & _FLOW_KEYS)


def load_flow_dirs(dirs: Iterable[Path], providers: Collection[str] = ()) -> FlowSet:
    """Every flow file in each of ``dirs`` and below (sorted by path, hidden ones skipped).

    A file with errors is skipped (its errors are in ``errors``); so is a second file
    declaring the same (flow id, tenant), and one naming a model provider not among
    ``providers`` (the server config's; none: not checked). A directory that does not exist
    is an error.
    """
    paths: list[Path] = []
    errors: list[FlowFileError] = []
    for directory in dirs:
        if Path(directory).is_dir():
            paths.append(Path(directory))
        else:
            errors.append(FlowFileError(directory, 0, "not a directory"))
    flows = load_flow_paths(paths, providers)
    flows.errors[:0] = errors
    return flows


def _directory_files(directory: Path, result: FlowSet) -> list[Path]:
    files = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).parts
        # Hidden files are editors' locks and backups (.#pizza.yaml); hidden directories are tools'.
        if path.suffix not in FLOW_SUFFIXES or any(p.startswith(".") for p in relative) or not path.is_file():
            continue
        if is_flow_file(path):
            files.append(path)
        else:
            result.skipped.append(str(path))
    return files


def load_flow_paths(paths: Iterable[Path], providers: Collection[str] = ()) -> FlowSet:
    """Like :func:`load_flow_dirs`, but each path may also be a file (loaded whatever its suffix).

    A file reached twice (a directory given twice, or a file and its directory, whatever the
    spelling of the path) is loaded once: it does not define its flow a second time."""
    result = FlowSet()
    seen: dict[tuple[str, str], FlowDocument] = {}
    calls: dict[tuple[str, str], FlowCheck] = {}
    loaded: set[Path] = set()
    for path in paths:
        path = Path(path)
        if path.is_dir():
            if path.resolve() in loaded:
                continue
            loaded.add(path.resolve())
            files = _directory_files(path, result)
        elif path.exists():
            files = [path]
        else:
            result.errors.append(FlowFileError(path, 0, "no such file or directory"))
            continue
        for file in files:
            resolved = file.resolve()
            if resolved in loaded:
                continue
            loaded.add(resolved)
            check = check_flow_file(file)
            result.files.append(check.path)
            result.errors.extend(check.errors)
            result.warnings.extend(check.warnings)
            if check.generations:
                result.calling_models.append(check.path)
            document = check.document
            if document is None or not _providers_known(check, providers, result):
                continue
            key = (document.flow_id, document.tenant)
            first = seen.get(key)
            if first is not None:
                owner = f"tenant {document.tenant!r}" if document.tenant else "shared, no tenant"
                result.errors.append(
                    FlowFileError(
                        check.path,
                        check.flow_line,
                        f"flow {document.flow_id!r} ({owner}) is already defined in {first.source}; "
                        "this file is skipped (give it another flow id or tenant)",
                    )
                )
                continue
            seen[key] = document
            if check.calls:
                calls[key] = check
    _check_calls(seen, calls, result)
    result.flows.extend(d for d in seen.values())
    return result


def _providers_known(check: FlowCheck, providers: Collection[str], result: FlowSet) -> bool:
    """Whether every model provider ``check``'s file names is configured (each one that is not
    is an error in ``result``); with none configured, nothing is checked."""
    if not providers:
        return True
    unknown = [(name, line, where) for name, line, where in check.providers if name not in providers]
    for name, line, where in unknown:
        result.errors.append(
            FlowFileError(
                check.path,
                line,
                f"{where}: no model provider {name!r} is configured (models.providers:"
                f" {', '.join(sorted(providers))}); this file is skipped",
            )
        )
    return not unknown


def _check_calls(
    seen: dict[tuple[str, str], FlowDocument], calls: dict[tuple[str, str], FlowCheck], result: FlowSet
) -> None:
    """Drop (and report) the flows whose sub-flow calls cannot work."""
    bad: set[tuple[str, str]] = set()
    for key, check in calls.items():
        tenant = key[1]
        for spec, line, where in check.calls:
            callee = seen.get((spec.flow, tenant)) or seen.get((spec.flow, ""))
            if callee is None:
                known = sorted({f for f, t in seen if t in ("", tenant)})
                result.errors.append(
                    FlowFileError(
                        check.path,
                        line,
                        f"{where}.flow: no flow {spec.flow!r} is loaded with this one "
                        f"(flows: {', '.join(known) or 'none'}); this file is skipped",
                    )
                )
                bad.add(key)
                continue
            for target in spec.inputs:
                slot = target.partition(".")[2]
                if slot not in callee.slots:
                    result.errors.append(
                        FlowFileError(
                            check.path,
                            line,
                            f"{where}.with: flow {spec.flow!r} has no slot {slot!r} "
                            f"(its slots: {', '.join(callee.slots) or 'none'}); this file is skipped",
                        )
                    )
                    bad.add(key)
    for key in _in_cycles(seen, calls):
        check = calls[key]
        result.errors.append(
            FlowFileError(
                check.path,
                check.calls[0][1],
                f"flow {key[0]!r} calls itself, directly or through the flows it calls; this file is skipped",
            )
        )
        bad.add(key)
    for key in bad:
        seen.pop(key, None)


def _in_cycles(
    seen: dict[tuple[str, str], FlowDocument], calls: dict[tuple[str, str], FlowCheck]
) -> list[tuple[str, str]]:
    def callees(key: tuple[str, str]) -> list[tuple[str, str]]:
        check = calls.get(key)
        found = []
        for spec, _line, _where in check.calls if check else ():
            own = (spec.flow, key[1])
            found.append(own if own in seen else (spec.flow, ""))
        return found

    cyclic = []
    for start in calls:
        todo, visited = list(callees(start)), set()
        while todo:
            key = todo.pop()
            if key == start:
                cyclic.append(start)
                break
            if key not in visited:
                visited.add(key)
                todo += callees(key)
    return cyclic

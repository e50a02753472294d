"""Every flow a process can run: the built-in ones, the bundled flow files, the configured directories."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from confab.config import bundled_path
from confab.runtime.flows import Flow, builtin_flows
from confab.runtime.flows.execution.interpreter import DeclarativeFlow
from confab.runtime.flows.language.document import FlowDocument
from confab.runtime.flows.language.loader import FlowFileError, FlowSet, load_flow_dirs, load_flow_paths


def bundled_flow_dir() -> Path:
    return bundled_path("flows")


def declarative_flows(documents: Iterable[FlowDocument]) -> list[DeclarativeFlow]:
    """One runnable flow per document; flows loaded together can call each other as sub-flows."""
    library: dict[tuple[str, str], DeclarativeFlow] = {}
    for document in documents:
        library[(document.flow_id, document.tenant)] = DeclarativeFlow(document, library)
    return list(library.values())


def load_flows(
    extra_dirs: Iterable[str | Path] = (),
    *,
    providers: Collection[str] = (),
    log: logging.Logger | None = None,
) -> tuple[list[Flow], list[FlowFileError]]:
    """The runnable flows, and the files that could not be loaded (reported, then skipped).

    ``providers``: the model providers of the server config, which generate steps may name
    (none: a name is not checked, and every generate step fails as without a provider).

    With ``log`` (the one process that reports for all, e.g. the server at start), one line
    says which flows loaded, from where, and one line per file skipped for errors; YAML files
    in a flow directory that are not flows are named at debug level only.
    """
    flow_set = load_flow_dirs([bundled_flow_dir(), *(Path(d) for d in extra_dirs)], providers)
    flows: list[Flow] = [*builtin_flows(), *declarative_flows(flow_set.flows)]
    if log is not None:
        log.info("flows loaded: %s", summary(flows))
        for problem in flow_set.errors:
            log.error("flow file skipped: %s", problem)
        for path in flow_set.skipped:
            log.debug("not a flow file, skipped: %s", path)
    return flows, list(flow_set.errors)


def flow_set_over(new_dirs: Sequence[str | Path], base_dirs: Sequence[str | Path]) -> FlowSet:
    """The flow files of ``base_dirs``, those of ``new_dirs`` in place of the ones they redefine.

    A flow directory may not define one (flow id, tenant) twice, so a new version of a flow
    lives in a directory of its own; this is the set a server would load once that file
    replaced the old one (``confab flows replay``). The new files are loaded with the base
    files they do not replace, so a new version can call the sub-flows the server has.
    """
    if not new_dirs:
        return load_flow_dirs([Path(d) for d in base_dirs])
    replaced = {(d.flow_id, d.tenant) for d in load_flow_dirs([Path(d) for d in new_dirs]).flows}
    base = load_flow_dirs([Path(d) for d in base_dirs])
    kept = [Path(d.source) for d in base.flows if (d.flow_id, d.tenant) not in replaced]
    combined = load_flow_paths([*(Path(d) for d in new_dirs), *kept])
    # The base files that failed alone, or are not flows, are not in the combined load.
    combined.errors[:0] = base.errors
    combined.skipped[:0] = base.skipped
    return combined


def summary(flows: Sequence[Flow]) -> str:
    """``pizza@3f2a... (config/flows/pizza.yaml), acme/support@7 (...)``: what runs, for logs."""
    parts = []
    for flow in flows:
        tenant = getattr(flow, "tenant", "")
        document = getattr(flow, "document", None)
        source = f" ({document.source})" if isinstance(document, FlowDocument) and document.source else ""
        parts.append(f"{tenant + '/' if tenant else ''}{flow.flow_id}@{flow.version}{source}")
    return ", ".join(parts) or "none"

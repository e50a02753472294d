"""Regenerate (or check) the Python gRPC modules in ``confab/protos`` from the .proto files.

Usage::

    python -m confab.tools.codegen               # rewrite stale generated files
    python -m confab.tools.codegen --check       # exit 1 and list stale files, 0 if up to date
    python -m confab.tools.codegen --proto-dir PATH

Code is produced by ``grpc_tools.protoc`` (``--python_out``, ``--grpc_python_out``,
``--pyi_out``) with grpc_tools' bundled well-known-type includes, then the flat
cross-imports protoc emits (``import common_pb2 as common__pb2``) are rewritten to
absolute ones (``from confab.protos import common_pb2 as common__pb2``), the one name the
package imports them by (``confab.protos.common_pb2`` and so on). Output depends only on the
.proto files and the pinned grpcio-tools version, so it is byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import importlib.resources
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

DEFAULT_PROTO_DIR = Path(__file__).resolve().parent.parent / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")

_FLAT_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)


def proto_files(proto_dir: Path) -> list[Path]:
    """Return the .proto files in ``proto_dir``, sorted by name."""
    return sorted(proto_dir.glob("*.proto"))


def expected_outputs(proto_dir: Path) -> list[str]:
    """Return the names of the files generated for ``proto_dir``, sorted."""
    return sorted(p.stem + suffix for p in proto_files(proto_dir) for suffix in GENERATED_SUFFIXES)


PACKAGE = "confab.protos"


def _absolutize(source: str, local_modules: set[str]) -> str:
    """Rewrite ``import X_pb2 as Y`` to ``from confab.protos import X_pb2 as Y`` for sibling modules."""

    def repl(match: re.Match[str]) -> str:
        module, alias = match.group(1), match.group(2)
        if module not in local_modules:
            return match.group(0)
        return f"from {PACKAGE} import {module} as {alias}"

    return _FLAT_IMPORT.sub(repl, source)


def generate(proto_dir: Path, out_dir: Path) -> list[str]:
    """Generate all modules for ``proto_dir`` into ``out_dir``; return the file names written."""
    protos = proto_files(proto_dir)
    if not protos:
        raise FileNotFoundError(f"no .proto files in {proto_dir}")
    wkt = importlib.resources.files("grpc_tools") / "_proto"
    with importlib.resources.as_file(wkt) as wkt_dir:
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={proto_dir}",
            f"--proto_path={wkt_dir}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--pyi_out={out_dir}",
            *(p.name for p in protos),
        ]
        # protoc resolves the bare names against --proto_path; run from proto_dir so
        # nothing about the caller's cwd leaks into the output.
        proc = subprocess.run(cmd, cwd=proto_dir, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"protoc failed ({proc.returncode}):\n{proc.stderr}")

    local_modules = {p.stem + "_pb2" for p in protos}
    names = expected_outputs(proto_dir)
    for name in names:
        path = out_dir / name
        text = path.read_text(encoding="utf-8")
        path.write_text(_absolutize(text, local_modules), encoding="utf-8", newline="\n")
    return names


def stale_files(proto_dir: Path) -> list[str]:
    """Regenerate into a temp dir and return the checked-in files that differ or are missing.

    Also reports orphaned generated files (``*_pb2*.py[i]`` with no matching .proto).
    """
    with tempfile.TemporaryDirectory(prefix="confab-codegen-") as tmp:
        fresh = Path(tmp)
        names = generate(proto_dir, fresh)
        stale = [
            n
            for n in names
            if not (proto_dir / n).is_file() or (proto_dir / n).read_bytes() != (fresh / n).read_bytes()
        ]
    wanted = set(names)
    orphans = sorted(
        p.name for p in proto_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES) and p.name not in wanted
    )
    return sorted(stale + orphans)


def write(proto_dir: Path) -> list[str]:
    """Regenerate into ``proto_dir``, touching only files whose content changed."""
    changed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="confab-codegen-") as tmp:
        fresh = Path(tmp)
        for name in generate(proto_dir, fresh):
            new = (fresh / name).read_bytes()
            target = proto_dir / name
            if not target.is_file() or target.read_bytes() != new:
                target.write_bytes(new)
                changed.append(name)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m confab.tools.codegen", description=__doc__)
    parser.add_argument(
        "--proto-dir",
        type=Path,
        default=DEFAULT_PROTO_DIR,
        help="directory with the .proto files and generated modules (default: %(default)s)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 and list generated files that are stale",
    )
    args = parser.parse_args(argv)
    proto_dir: Path = args.proto_dir.resolve()

    if args.check:
        stale = stale_files(proto_dir)
        if stale:
            print(f"codegen: stale (run `make proto`): {', '.join(stale)}", file=sys.stderr)
            return 1
        print(f"codegen: {len(expected_outputs(proto_dir))} generated files up to date")
        return 0

    changed = write(proto_dir)
    print(f"codegen: {len(changed)} file(s) updated in {proto_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

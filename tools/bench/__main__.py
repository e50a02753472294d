"""Placeholder entry point for ``python -m confab.tools.bench`` (to be replaced)."""

import sys


def main() -> int:
    """Report that no benchmark is implemented yet."""
    print("confab bench: no benchmarks implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

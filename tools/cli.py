"""Placeholder ``confab`` command-line entry point (the real CLI replaces this file)."""

import sys

USAGE = "usage: confab serve --listen HOST:PORT --data-dir DIR"


def main() -> int:
    """Print usage and return a non-zero exit code."""
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

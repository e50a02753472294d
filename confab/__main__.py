"""``python -m confab``: the ``confab`` command, for where its script is not on the PATH."""

from confab.tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""The `ondrop` command. Its entry point imports the commands inside `main`, so that a
Ctrl-C while they load ends the command quietly, as it does at any later moment."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from ondrop.cli.main import main as run
    except KeyboardInterrupt:
        sys.exit(130)
    run()

"""The `helpdesk-pipe` entry point: `deliver` skips click and everything else it does not need."""

from __future__ import annotations

import sys

__all__ = ["main"]

# Options that take a value; `deliver`'s own are here too, so that an alias line that
# puts --queue first still reaches deliver (click would exit 2: a bounce).
_GLOBAL_WITH_VALUE = ("--config", "-c", "--queue", "-q")


def _command(argv: list[str]) -> str | None:
    """Return the subcommand name, skipping global options."""
    args = iter(argv)
    for arg in args:
        if arg in _GLOBAL_WITH_VALUE:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if _command(argv) == "deliver":
        # The MTA's command: a stdlib client of ingestd, delivering here without it.
        from helpdesk.ingest.client import main as deliver_main

        return deliver_main(argv)
    from helpdesk.cli import cli

    return cli.main(args=argv, prog_name="helpdesk-pipe", standalone_mode=True) or 0


if __name__ == "__main__":
    sys.exit(main())

"""The `membench` command line. Each subcommand is a module in `runners/commands/` that defines
`HELP`, `add_arguments(parser)` and `run(args) -> int`; modules are discovered by name.

Bad input never produces a traceback: `UsageError` (a flag, a path) and `ConfigError` (a task, model or
spec setting, an import path) raised while handling a command are printed as one line `membench: error: ...`
and the exit code is 2. Ctrl-C prints "membench: interrupted" (exit 130) and SIGTERM "membench: terminated"
(exit 143), at start-up too: one that comes while the commands and plugin folders import (torch among them) is
held until they have imported (runners/interrupts.py; raised in the middle of torch's import, a Ctrl-C was seen
to end the process with SIGINT after the one line, exit -2 instead of 130). Any other exception is a bug: it
keeps its traceback (exit 1), so that it can be reported.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys

from membench import plugins
from membench.checks import ConfigError
from membench.runners import commands
from membench.runners.errors import UsageError
from membench.runners.interrupts import Terminated, held_signals, install, raise_terminated


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="membench", description="Measure the short-term memory of sequence models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"membench.runners.commands.{info.name}")
        command = sub.add_parser(info.name.replace("_", "-"), help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and turn bad input, Ctrl-C and SIGTERM into one line: exit 2, 130 and 143."""
    previous = install(signal.SIGTERM, raise_terminated)
    try:
        with held_signals():  # start-up: every command imports (torch), then the plugin folders
            args = build_parser().parse_args(argv)
            for folder in getattr(args, "include", None) or []:  # before the command looks anything up
                plugins.include(folder)
        return int(args.handler(args) or 0)
    except (UsageError, ConfigError) as err:
        message = " ".join(str(err).split())  # one line, whatever the message held
        sys.stderr.write(f"membench: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("membench: interrupted\n")
        return 130
    except Terminated:
        sys.stderr.write("membench: terminated\n")
        return 143
    except BrokenPipeError:  # the reader of stdout went away (`membench models | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        install(signal.SIGTERM, previous)

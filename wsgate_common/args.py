"""Command-line parsing that fails the way the README promises: one ``Error:`` line, exit 1."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr with exit status 1 (argparse's
    default is the whole usage text and status 2); ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        print(f"Error: {message} (`{self.prog} --help` shows the usage)", file=sys.stderr)
        raise SystemExit(1)

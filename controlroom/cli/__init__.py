"""The command line and the composition root: the only package that wires things together."""

from controlroom.cli.entry import main, parser
from controlroom.cli.serving import build_app
from controlroom.cli.wiring import Services, bootstrap

__all__ = ["Services", "bootstrap", "build_app", "main", "parser"]

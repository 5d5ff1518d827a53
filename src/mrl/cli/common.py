"""Shared CLI pieces: error translation at the edge, option parsing, result tables."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mrl.errors import MrlError

# Off a terminal (a pipe, a file, CI logs) rich would fit tables to 80 columns and cut headers;
# there, lines are as wide as they need (up to $COLUMNS when set).
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 240)
console = Console(width=_WIDTH)
RuntimeOpt = Annotated[str, typer.Option(
    help="How text is encoded: torch, onnx, onnx-int8, openvino (a model folder written by `mrl export`) or auto (the "
         "best the folder has).", envvar="MRL_RUNTIME")]
ThreadsOpt = Annotated[int | None, typer.Option(
    help="Threads of the text encoder in this process (default: the runtime's, every core).", min=1,
    envvar="MRL_THREADS", show_default=False)]
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _WIDTH)
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def handle_errors(fn: F) -> F:
    """Turn an :class:`MrlError` into a one-line message and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        try:
            return fn(*args, **kwargs)
        except MrlError as e:
            # escaped: a message naming "mrl[qdrant]" or a path with brackets is text, not rich markup
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            # every write goes to a temporary name first and commits by a rename: nothing committed changed
            where = f" ({e.filename})" if e.filename else ""
            err_console.print(f"[bold red]error:[/] no space left on the device{escape(where)}; nothing that was "
                              "committed changed: free some space and run the command again",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return cast(F, wrapper)  # functools.wraps keeps fn's signature, which typer reads


def parse_list(text: str | None, what: str, cast: Callable[[str], T]) -> list[T] | None:
    """``"32,64,128"`` -> ``[32, 64, 128]`` (with ``cast=int``); the error names the bad item."""
    if text is None or not text.strip():
        return None
    out = []
    for item in text.split(","):
        try:
            out.append(cast(item.strip()))
        except ValueError:
            kind = "an integer" if cast is int else "a number"
            raise MrlError(f"{what}: {item.strip()!r} is not {kind} (expected e.g. 32,64,128)") from None
    return out


def parse_ints(text: str | None, what: str) -> list[int] | None:
    return parse_list(text, what, int)


def parse_floats(text: str | None, what: str) -> list[float] | None:
    return parse_list(text, what, float)


def results_table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    return table


def print_json(data: Any) -> None:
    """A machine-readable result on stdout: one JSON document, nothing else on that stream."""
    typer.echo(json.dumps(data, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


def check_output(path: Path | None, kind: str, option: str) -> None:
    """Refuse, before any work, an output ``path`` that cannot become a ``kind`` ("file" or "folder"):
    an existing folder given for a file or file for a folder, a path under a file, a read-only place."""
    if path is None:
        return
    if kind == "file" and path.is_dir():
        raise MrlError(f"{option} {path}: is a folder; give a file name")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise MrlError(f"{option} {path}: is a file; give a folder")
    parent = path if kind == "folder" else path.parent
    while not parent.exists():  # the nearest existing ancestor is where the output gets created
        parent = parent.parent
    if not parent.is_dir():
        raise MrlError(f"{option} {path}: {parent} is a file, so nothing can be created under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MrlError(f"{option} {path}: {parent} is not writable")

"""Helpers shared by test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

from typer.testing import CliRunner

from cleandoc.cli import app


def cli(*args):
    """Invoke the app in-process; an exception other than the exit itself fails the test with its traceback."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output
    return result

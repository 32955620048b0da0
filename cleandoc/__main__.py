"""`python -m cleandoc` runs the command line."""

from .cli import app

app(prog_name="cleandoc")

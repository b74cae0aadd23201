"""`python -m modelcar` is the `modelcar` command (cli.py, whose import also keeps httpx's CLI unloaded)."""

from .cli import main

main()

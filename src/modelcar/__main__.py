"""`python -m modelcar` is the `modelcar` command."""

from .cli import main

main()

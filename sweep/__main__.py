"""`python -m sweep` is the `sweep` command (how `sweep run --workers N` starts its workers)."""

from sweep.cli import main

main()

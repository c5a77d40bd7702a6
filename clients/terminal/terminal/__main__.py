"""`python -m terminal`: the same as `yibao-terminal`."""

from terminal.cli import main

main()

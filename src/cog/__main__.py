"""`python -m cog`: the same as the `cog` command."""

from cog.cli import main

main()

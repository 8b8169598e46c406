"""`python -m ondrop` is the `ondrop` command."""

from ondrop.cli import main

main()

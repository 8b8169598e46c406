"""`python -m ondrop` is the `ondrop` command."""

from ondrop.cli.main import main

main()

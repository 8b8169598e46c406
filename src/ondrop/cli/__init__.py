"""The `ondrop` command."""

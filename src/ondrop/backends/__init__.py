"""Backends: where a pool's claimed jobs execute (this machine, a Ray cluster)."""

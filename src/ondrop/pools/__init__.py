"""Pools: where queued jobs wait and which worker runs them."""

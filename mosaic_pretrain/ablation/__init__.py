"""Ablations: one recipe key swept over values (and seeds), compared at equal steps."""

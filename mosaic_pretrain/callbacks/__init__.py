"""Training callbacks and logger destinations, one per module."""

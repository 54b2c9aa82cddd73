"""Measurement code behind the scripts in `scripts/`; results land under `benchmarks/`."""

"""Training: the Composer glue (model wrapper, builders from a recipe, the run)."""

"""Commands that combine the training loop with GLUE and report on runs: `train`, `check`."""

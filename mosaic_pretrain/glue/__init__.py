"""GLUE finetuning sweeps: the sweep YAML (`config`), one job (`job`), the parallel scheduler
(`sweep`), metrics and the report. Run with `mosaic-pretrain glue SWEEP.yaml`."""

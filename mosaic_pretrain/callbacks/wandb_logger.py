"""Composer's W&B logger, as a run's logger: metrics only, never checkpoints."""

from composer.loggers import WandBLogger


class WandBMetricsLogger(WandBLogger):
    """Checkpoints stay in the save folder (log_artifacts is off), so there is never one to fetch
    from W&B. Composer's autoresume asks every logger for the latest checkpoint when the save
    folder has none (a run's first start); W&B's own lookup fails offline (no entity) and needs
    the network online. Saying "not there" lets that first start go on."""

    def download_file(
        self,
        remote_file_name: str,
        destination: str,
        overwrite: bool = False,
        progress_bar: bool = True,
    ) -> None:
        raise FileNotFoundError(f"{remote_file_name}: checkpoints are not uploaded to W&B")

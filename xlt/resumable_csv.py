"""A CSV logger for runs that are relaunched into their own directory (preemption, resume).

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when a new process opens it, so a job
resumed after preemption would lose every row its earlier attempt wrote. This one keeps them and
appends, and writes each logged step at once, so a killed attempt leaves the rows it logged. Steps
between an attempt's last checkpoint and its end are logged again by the next attempt: a reader keeps
the last row of each step.
"""

from __future__ import annotations

import csv

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning's deletes metrics.csv here; keep it and continue its columns.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = list(next(csv.reader(fh), []))


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to the run's ``metrics.csv`` across processes (see module doc)."""

    def __init__(self, save_dir: str, name: str = "csv", version: str = "") -> None:
        super().__init__(save_dir=save_dir, name=name, version=version, flush_logs_every_n_steps=1)

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if not isinstance(self._experiment, _AppendingWriter):
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

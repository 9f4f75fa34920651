"""TensorBoard sink: scalars per epoch (step = epoch), the config as text and as hyperparameters (HParams tab)
with the final figures as its metrics. Written by torch's ``SummaryWriter`` (extra ``tensorboard``)."""
from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from robustlab.core.errors import ConfigError
from robustlab.core.schema import spec
from robustlab.tracking.base import TRACKERS, Tracker, TrackerConfig, final_metrics, flatten, numeric


@dataclass
class TensorBoardConfig(TrackerConfig):
    log_dir: typing.Optional[str] = spec(None, doc="folder for every run's events, each in <log_dir>/<run name> "
                                                    "(default: <run folder>/tensorboard)")


    def check(self, key: str) -> None:
        import importlib.util
        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(f"{key}name: 'tensorboard' needs the tensorboard package: "
                              "pip install 'robustlab[tensorboard]'")


@TRACKERS.register("tensorboard", TensorBoardConfig)
class TensorBoardTracker(Tracker):
    def _folder(self) -> Path:
        ident = self.identity
        if self.cfg.log_dir is None:
            return ident.run_dir / "tensorboard"
        return Path(self.cfg.log_dir) / (f"{ident.study}/{ident.name}" if ident.study else ident.name)

    def start(self, config: dict, resumed_after_epoch: int) -> None:
        from torch.utils.tensorboard import SummaryWriter
        self.config = config
        folder = self._folder()
        earlier = folder.is_dir() and any(folder.glob("events.out.tfevents.*"))
        # a resumed run: whatever an earlier process wrote from the next epoch on is purged and sent again
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=resumed_after_epoch + 1 if earlier else None)
        if not earlier:
            self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def log_epoch(self, row: dict) -> None:
        step = int(row["epoch"])
        for key, value in numeric(row).items():
            if key != "epoch":
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, results: dict) -> None:
        metrics = final_metrics(results)
        if metrics:   # the HParams tab: one row per run, the config's keys as columns
            self.writer.add_hparams(flatten(self.config), metrics, run_name=".")
        self.writer.flush()

    def close(self) -> None:
        if getattr(self, "writer", None) is not None:
            self.writer.close()

"""Experiment-tracking sinks (``train.trackers``): every epoch's metrics, the resolved config as hyperparameters,
the final figures. ``metrics.jsonl`` stays the source of truth; a sink is a copy for the user's dashboard.

- ``tensorboard`` (extra ``tensorboard``): event files under ``<run>/tensorboard`` (or ``log_dir/<run name>``), so
  ``tensorboard --logdir runs/`` shows every run and every study trial, each under its own name.
- ``mlflow`` (extra ``mlflow``): one MLflow run per robustlab run, in a local file store (``./mlruns``) unless a
  tracking URI is given; a resumed run continues the same MLflow run. Experiment: the study's name for trials.

A plug-in registers its own sink with ``@TRACKERS.register("name", ConfigClass)`` (docs/extending.md).
"""
from robustlab.tracking.base import TRACKERS, RunIdentity, Tracker, TrackerConfig, build_trackers, flatten, preflight_trackers
from robustlab.tracking import mlflow_sink, tensorboard_sink  # noqa: F401  (registration)

__all__ = ["TRACKERS", "RunIdentity", "Tracker", "TrackerConfig", "build_trackers", "flatten", "preflight_trackers"]

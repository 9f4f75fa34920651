"""MLflow sink (extra ``mlflow``: ``mlflow-skinny`` with SQLAlchemy for the local store): one MLflow run per
robustlab run; the flattened config as parameters, every epoch's metrics (step = epoch), the final figures, the
status as a tag. The MLflow run id is kept in ``<run>/mlflow_run.json`` so a resumed run goes on in the same
MLflow run. Default store: ``sqlite:///mlflow.db`` in the working folder (MLflow 3 keeps its ``./mlruns`` file
store in maintenance mode and refuses it by default); view it with ``mlflow ui --backend-store-uri
sqlite:///mlflow.db``."""
from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

from robustlab.core.errors import ConfigError
from robustlab.core.io import read_json, write_json
from robustlab.core.schema import spec
from robustlab.tracking.base import TRACKERS, Tracker, TrackerConfig, final_metrics, flatten, numeric

MLFLOW_PARAM_LIMIT = 500   # characters in a parameter value (MLflow's limit in its file store)


@dataclass
class MLflowConfig(TrackerConfig):
    tracking_uri: typing.Optional[str] = spec(None, doc="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                                                        "else a local store sqlite:///mlflow.db in the working folder)")
    experiment: typing.Optional[str] = spec(None, doc="experiment name (default: the study's name for trials, "
                                                      "else 'robustlab')")


    def check(self, key: str) -> None:
        import importlib.util
        if importlib.util.find_spec("mlflow") is None:
            raise ConfigError(f"{key}name: 'mlflow' needs MLflow: pip install 'robustlab[mlflow]'")

    def uri(self) -> str:
        import os
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"

    def preflight(self, key: str) -> None:
        """An HTTP(S) tracking server must accept a connection within seconds (MLflow's client retries an
        unreachable one for minutes: 270 s of silence measured)."""
        from urllib.parse import urlsplit

        from robustlab.core.net import unreachable
        uri = self.uri()
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https"):
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        why = unreachable(parts.hostname or "", port)
        if why is not None:
            raise ConfigError(f"{key}tracking_uri: no MLflow server answers at {uri} ({why}); start it (mlflow server "
                              "...) or drop the tracker")


@TRACKERS.register("mlflow", MLflowConfig)
class MLflowTracker(Tracker):
    def start(self, config: dict, resumed_after_epoch: int) -> None:
        import mlflow
        uri = self.cfg.uri()
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = self.cfg.experiment or self.identity.study or "robustlab"
        found = self.client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found else self.client.create_experiment(experiment)
        marker = self.identity.run_dir / "mlflow_run.json"
        known = read_json(marker) if marker.is_file() else {}
        if known.get("tracking_uri") == uri and known.get("run_id"):
            self.run_id = known["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(exp_id, run_name=self.identity.name,
                                         tags={"robustlab.run_dir": str(self.identity.run_dir.resolve())})
            self.run_id = run.info.run_id
            write_json(marker, {"tracking_uri": uri, "run_id": self.run_id, "experiment": experiment})
            from mlflow.entities import Param
            params = [Param(k, str(v)[:MLFLOW_PARAM_LIMIT]) for k, v in flatten(config).items()]
            for i in range(0, len(params), 100):     # MLflow takes at most 100 parameters per batch
                self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log_epoch(self, row: dict) -> None:
        import time
        from mlflow.entities import Metric
        stamp, step = int(time.time() * 1000), int(row["epoch"])
        metrics = [Metric(k, v, stamp, step) for k, v in numeric(row).items() if k != "epoch"]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, results: dict) -> None:
        for key, value in final_metrics(results).items():
            self.client.log_metric(self.run_id, key.replace("/", "."), value)
        self.client.set_tag(self.run_id, "robustlab.status", results.get("status", "unknown"))
        self.client.set_terminated(self.run_id, status="FINISHED" if results.get("status") == "finished" else "FAILED")
        self.ended = True

    def close(self) -> None:
        if getattr(self, "run_id", None) and not getattr(self, "ended", False):   # Ctrl-C, a kill, an error
            self.client.set_terminated(self.run_id, status="KILLED")

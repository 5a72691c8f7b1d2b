"""`TrackingConfig`: where runs and models go, and how the student is judged for promotion.

A plain dataclass of YAML-friendly fields so `otdistill.config.RunConfig` can compose it and record it whole.
The timeouts and retry counts exist because MLflow's client otherwise retries a dead server for minutes
(7 retries with exponential backoff, 120 s per request): a pipeline step must fail fast and clearly instead.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from otdistill.stats import GATE_METHODS


@dataclass
class TrackingConfig:
    """MLflow tracking and model-registry settings for one pipeline run.

    tracking_uri: MLflow tracking server (``http(s)://...``) or a local store (``sqlite:///...``,
      ``file:...``); empty means env ``MLFLOW_TRACKING_URI``, then MLflow's default local store.
    registry_uri: model registry; empty means the tracking URI.
    experiment: MLflow experiment that holds the pipeline runs.
    artifact_location: artifact root for the experiment when this package creates it; empty means the
      server's default (its ``--artifacts-destination`` proxy). Set it for local stores (sqlite).
    registered_model_name: registry name the distilled student is registered under.
    champion_alias: alias that marks the promoted student (what serving loads as ``models:/name@alias``).
    promotion_metric: evaluation metric that decides promotion (e.g. ``rougeLsum``).
    greater_is_better: direction of ``promotion_metric`` (False for losses / perplexity).
    promotion_margin: the candidate must beat the champion by strictly more than this (absolute units).
    gate_method: how "beats by more than the margin" is judged (`otdistill.stats`): ``bootstrap`` (the
      paired bootstrap interval's lower bound over the validation rows must be above the margin, so a
      gain within noise does not promote) or ``point`` (the difference of the means must be).
    gate_confidence / gate_resamples / gate_seed: the bootstrap's interval level, resamples and seed.
    request_timeout_s: per-request HTTP timeout of the MLflow client.
    max_retries: HTTP retries of the MLflow client on connection errors and 429/5xx.
    backoff_factor: urllib3 backoff factor of those retries (sleeps 0, 2f, 4f, ... seconds).
    preflight_timeout_s: total time the reachability check waits for the server before failing.
    race_settle_s: pause before re-checking the alias after setting it (concurrent registrations).
    system_metrics_interval_s: how often each step run samples MLflow's system metrics (CPU, memory,
      disk, network, and GPU where NVML finds one), logged as ``system/...``; 0 turns them off.
    """

    tracking_uri: str = ""
    registry_uri: str = ""
    experiment: str = "otdistill"
    artifact_location: str = ""
    registered_model_name: str = "otdistill-student"
    champion_alias: str = "champion"
    promotion_metric: str = "rougeLsum"
    greater_is_better: bool = True
    promotion_margin: float = 0.0
    gate_method: str = "bootstrap"
    gate_confidence: float = 0.95
    gate_resamples: int = 10_000
    gate_seed: int = 0
    request_timeout_s: int = 30
    max_retries: int = 3
    backoff_factor: int = 1
    preflight_timeout_s: float = 10.0
    race_settle_s: float = 0.5
    system_metrics_interval_s: float = 10.0

    def __post_init__(self) -> None:
        problems = []
        if not self.experiment:
            problems.append("experiment must not be empty")
        if not self.registered_model_name:
            problems.append("registered_model_name must not be empty")
        if not self.champion_alias:
            problems.append("champion_alias must not be empty")
        if not self.promotion_metric:
            problems.append("promotion_metric must not be empty")
        if not math.isfinite(self.promotion_margin) or self.promotion_margin < 0:
            problems.append(f"promotion_margin must be a finite number >= 0, got {self.promotion_margin}")
        if self.gate_method not in GATE_METHODS:
            problems.append(f"gate_method must be one of {', '.join(GATE_METHODS)}, got {self.gate_method!r}")
        if not 0.0 < self.gate_confidence < 1.0:
            problems.append(f"gate_confidence must be in (0, 1), got {self.gate_confidence}")
        if self.gate_resamples < 1:
            problems.append(f"gate_resamples must be >= 1, got {self.gate_resamples}")
        if self.request_timeout_s < 1:
            problems.append(f"request_timeout_s must be >= 1, got {self.request_timeout_s}")
        if self.max_retries < 0:
            problems.append(f"max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_factor < 0:
            problems.append(f"backoff_factor must be >= 0, got {self.backoff_factor}")
        if self.preflight_timeout_s <= 0:
            problems.append(f"preflight_timeout_s must be > 0, got {self.preflight_timeout_s}")
        if self.race_settle_s < 0:
            problems.append(f"race_settle_s must be >= 0, got {self.race_settle_s}")
        if not math.isfinite(self.system_metrics_interval_s) or self.system_metrics_interval_s < 0:
            problems.append(f"system_metrics_interval_s must be >= 0, got {self.system_metrics_interval_s}")
        if problems:
            raise ValueError("invalid TrackingConfig: " + "; ".join(problems))

    def resolved_tracking_uri(self) -> str:
        """The tracking URI in force: the configured one, else env ``MLFLOW_TRACKING_URI``, else ''."""
        return self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")

    def resolved_registry_uri(self) -> str:
        """The registry URI in force: the configured one; else the configured tracking URI; else env
        ``MLFLOW_REGISTRY_URI``; else the tracking URI in force. A configured tracking server wins over the
        environment so that one process can switch servers (MLflow writes its URIs into the env)."""
        if self.registry_uri:
            return self.registry_uri
        if self.tracking_uri:
            return self.tracking_uri
        return os.environ.get("MLFLOW_REGISTRY_URI", "") or self.resolved_tracking_uri()

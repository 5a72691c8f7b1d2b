"""`otdistill reproduce`: rebuild a registered student from the tracking store alone, and say whether the
rebuild is the same model.

    otdistill reproduce models:/otdistill-quickstart-student@champion --local
    otdistill reproduce models:/my-student/7 --host https://kfp.example.com --wait --tracking-uri http://...

1. `reproduce_record.load_original`: the version, its parent run and the recorded `config.yaml`;
2. `reproduce_record.rebuild_config`: the same sources at the recorded revisions, seeds, precision,
   deterministic kernels, no step cache (`--set` on top: recorded as a deviation);
3. `reproduce_checks.check_available`: refuse when a local path is gone, a model revision is gone or
   changed, or the data's content hash differs from the recorded one;
4. run it: `--local` through the local runner `otdistill run` uses (kfp.local, every step executed), or
   submitted to Kubeflow with the recorded images (`--host`);
5. `reproduce_verdict.compare_versions`: weights hashes equal -> "bit-for-bit", else the largest absolute
   weight difference and both evaluation scores; tagged on the rebuild's parent run and printed.

The rebuild registers as ``<name>-reproduction`` in the same registry, so it never moves an alias of the
model it reproduces.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from otdistill.reproduce_checks import check_available
from otdistill.reproduce_record import (
    MODEL_URI_TAG,
    Original,
    Rebuild,
    ReproduceError,
    deviation_json,
    load_original,
    rebuild_config,
)
from otdistill.reproduce_verdict import TAG_PREFIX, Verdict, compare_versions
from otdistill.tracking.config import TrackingConfig
from otdistill.tracking.connection import tracking_client
from otdistill.tracking.lineage import code_version

log = logging.getLogger("otdistill.reproduce")


@dataclass
class Reproduction:
    """What `reproduce` found, ran and concluded."""

    original: Original
    rebuild: Rebuild
    checked: list[str]
    tracking_uri: str
    rebuild_run_id: str = ""
    kfp_run_id: str = ""
    verdict: Verdict | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"reproducing {self.original.uri} (run {self.original.parent_run_id})"]
        lines += [f"  pinned    {k}: {v}" for k, v in sorted(self.rebuild.pins.items())]
        lines += [f"  deviation {k} = {v!r} (--set)" for k, v in sorted(self.rebuild.deviations.items())]
        lines += [f"  checked   {line}" for line in self.checked]
        lines += [f"  {note}" for note in self.notes]
        if self.verdict is not None:
            lines.append(self.verdict.describe())
        return "\n".join(lines)


def _client(tracking_uri: str) -> Any:
    """The project's MLflow client (`tracking_client`) for tracking and registry at `tracking_uri`."""
    return tracking_client(TrackingConfig(tracking_uri=tracking_uri))


def find_tracking_uri(ref: str, run_root: str | Path = "runs") -> str:
    """Where the model lives: env MLFLOW_TRACKING_URI, else the one local run store (`<run_root>/*/mlflow.db`)
    whose registry has the model `ref` names (what `otdistill run` leaves behind)."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    from mlflow.exceptions import MlflowException

    name = ref.removeprefix("models:/").split("@")[0].split("/")[0] if ref.startswith("models:/") else ""
    stores = sorted(Path(run_root).glob("*/mlflow.db"))
    for store in stores:
        uri = f"sqlite:///{store.resolve()}"
        try:
            if name and _client(uri).get_registered_model(name) is not None:
                return uri
        except MlflowException:
            continue
    tried = ", ".join(str(s) for s in stores) or f"no {run_root}/*/mlflow.db"
    raise ReproduceError(
        f"{ref}: no tracking store given (--tracking-uri or MLFLOW_TRACKING_URI) and none found locally "
        f"that has it (tried: {tried})"
    )


def prepare(ref: str, tracking_uri: str, overrides: Mapping[str, Any], *, local: bool) -> Reproduction:
    """Steps 1-3: the original, the rebuild's config, the availability checks (raise ReproduceError)."""
    client = _client(tracking_uri)
    original = load_original(client, ref)
    rebuild = rebuild_config(original, overrides, tracking_uri if local else "")
    checked = check_available(original, rebuild.config, rebuild.deviations)
    plan = Reproduction(original=original, rebuild=rebuild, checked=checked, tracking_uri=tracking_uri)
    recorded_code = original.lineage.get("code_version", "")
    if recorded_code and recorded_code != code_version():
        plan.notes.append(
            f"note: the original ran code {recorded_code}, this is {code_version()}: "
            "a code change can change the result"
        )
    return plan


def _conclude(
    plan: Reproduction, parent_tags: Mapping[str, str], rebuild_run_id: str, tolerance: float
) -> None:
    """Step 5 for a finished rebuild whose parent run is `rebuild_run_id`: the verdict, tagged there."""
    import re

    client = _client(plan.tracking_uri)
    match = re.fullmatch(r"models:/(.+)/(\d+)", parent_tags.get(MODEL_URI_TAG, ""))
    if match is None:
        raise ReproduceError(f"the rebuild's run {rebuild_run_id} registered no model ({MODEL_URI_TAG})")
    plan.rebuild_run_id = rebuild_run_id
    plan.verdict = compare_versions(
        client,
        (plan.original.model_name, plan.original.version),
        (match[1], match[2]),
        original_run_id=plan.original.parent_run_id,
        rebuild_run_id=rebuild_run_id,
        tolerance=tolerance,
    )
    tags = {
        **plan.verdict.tags(),
        f"{TAG_PREFIX}deviations": deviation_json(plan.rebuild.deviations),
        f"{TAG_PREFIX}pins": deviation_json(plan.rebuild.pins),
    }
    for key, value in tags.items():
        client.set_tag(rebuild_run_id, key, value)


def reproduce_local(
    ref: str,
    tracking_uri: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    run_dir: str | Path | None = None,
    tolerance: float = 0.0,
    terminal: TextIO | None = None,
) -> Reproduction:
    """Rebuild `ref` on this machine (kfp.local, every step run) and compare it with the original."""
    from otdistill.pipelines.local import run_local

    plan = prepare(ref, tracking_uri, overrides or {}, local=True)
    cfg = plan.rebuild.config
    root = Path(run_dir) if run_dir else Path(cfg.local.run_root) / f"{cfg.name}-reproduce"
    result = run_local(cfg, root, fresh=True, terminal=terminal)
    plan.notes.append(f"rebuilt in {result.seconds / 60:.1f} min: run {result.mlflow_run_id} in {root}")
    parent = _client(tracking_uri).get_run(result.mlflow_run_id)
    _conclude(plan, parent.data.tags, result.mlflow_run_id, tolerance)
    return plan


def reproduce_on_cluster(
    ref: str,
    tracking_uri: str,
    kfp_client: Any,
    overrides: Mapping[str, Any] | None = None,
    *,
    experiment: str = "otdistill",
    namespace: str | None = None,
    service_account: str | None = None,
    wait_timeout: float | None = None,
    tolerance: float = 0.0,
) -> Reproduction:
    """Submit the rebuild to Kubeflow with the recorded images; with `wait_timeout`, wait for it and
    conclude (the tracking store at `tracking_uri` must be the one the cluster's steps log to)."""
    from otdistill.pipelines import submit as kfp_ops
    from otdistill.tracking.runs import find_pipeline_run

    plan = prepare(ref, tracking_uri, overrides or {}, local=False)
    cfg = plan.rebuild.config
    plan.notes.append(f"images: {cfg.cluster.image} (CPU steps), {cfg.cluster.gpu_image} (GPU steps)")
    plan.kfp_run_id = kfp_ops.submit(
        kfp_client,
        cfg,
        experiment=experiment,
        run_name=f"reproduce-{plan.original.model_name}-v{plan.original.version}",
        namespace=namespace,
        service_account=service_account or cfg.cluster.service_account,
    )
    plan.notes.append(f"submitted KFP run {plan.kfp_run_id}")
    if wait_timeout is None:
        plan.notes.append("not waiting (--wait): no verdict yet")
        return plan
    state = kfp_ops.wait_for_run(kfp_client, plan.kfp_run_id, wait_timeout)
    if state != kfp_ops.SUCCEEDED:
        raise ReproduceError(f"the rebuild's KFP run {plan.kfp_run_id} ended {state}")
    parent = find_pipeline_run(TrackingConfig(tracking_uri=tracking_uri), plan.kfp_run_id)
    if parent is None:
        raise ReproduceError(f"no MLflow run for KFP run {plan.kfp_run_id} in {tracking_uri}")
    tags = _client(tracking_uri).get_run(parent.run_id).data.tags
    _conclude(plan, tags, parent.run_id, tolerance)
    return plan

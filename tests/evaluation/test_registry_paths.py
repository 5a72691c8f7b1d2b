"""Issue 14 vector 3: a registered model whose MLmodel names a directory outside its download (an absolute
``model_binary``, a ``../`` artifact path) is refused on a real MLflow registry (SQLite store), and the
directory it names is neither moved nor copied into the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from otdistill.evaluation.registry import resolve_registered_model
from otdistill.safe_paths import UnsafePathError


def _victim(root: Path) -> Path:
    """A directory that looks like a Hugging Face model (what the unconfined code would move away)."""
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "gpt2"}')
    (root / "model.safetensors").write_bytes(b"someone else's weights")
    return root


@pytest.mark.parametrize("where", ["absolute model_binary", "relative pyfunc hf path"])
def test_mlmodel_naming_a_directory_outside_the_download_is_refused(
    tmp_path: Path, mlflow_store: str, where: str
) -> None:
    import mlflow

    victim = _victim(tmp_path / "victim" / "model")
    if where == "absolute model_binary":
        flavors = {"transformers": {"model_binary": str(victim), "source_model_name": "x/y"}}
    else:  # the download is <cache>/mlflow-registry/.<entry>.<tmp>/download: four levels up is tmp_path
        flavors = {"python_function": {"artifacts": {"hf": {"path": "../../../../victim/model"}}}}
    logged = tmp_path / "logged"
    logged.mkdir()
    (logged / "MLmodel").write_text(yaml.safe_dump({"flavors": flavors}))
    name = "evil-" + where.replace(" ", "-")
    with mlflow.start_run(experiment_id=mlflow_store) as run:
        mlflow.log_artifacts(str(logged), "student")
    client = mlflow.MlflowClient()
    client.create_registered_model(name)
    source = f"{run.info.artifact_uri}/student"
    version = client.create_model_version(name, source, run.info.run_id).version
    client.set_registered_model_alias(name, "champion", version)

    before = sorted(p.relative_to(victim) for p in victim.rglob("*"))
    cache = tmp_path / "cache"
    with pytest.raises(UnsafePathError, match="absolute" if "absolute" in where else r"'\.\.' part"):
        resolve_registered_model(f"models:/{name}@champion", cache_dir=cache)
    assert sorted(p.relative_to(victim) for p in victim.rglob("*")) == before  # not moved away
    assert (victim / "model.safetensors").read_bytes() == b"someone else's weights"
    entries = list((cache / "mlflow-registry").iterdir()) if (cache / "mlflow-registry").exists() else []
    assert [e for e in entries if not e.name.endswith(".lock")] == []  # no entry, no leftover download
    assert not list(cache.rglob("model.safetensors"))

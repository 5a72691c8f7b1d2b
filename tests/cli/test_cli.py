"""The `otdistill` CLI: compile for real; submit and schedule against a mocked kfp.Client (no KFP API
server can run here), asserting the calls the real client would receive."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import yaml

from otdistill import cli
from otdistill.config import ConfigError
from otdistill.pipelines import submit as kfp_ops

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.yaml")


def test_compile_writes_pipeline_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.yaml"
    assert cli.main(["compile", "--config", TINY, "--set", "distill.max_steps=3", "-o", str(out)]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    assert spec["root"]["inputDefinitions"]["parameters"]["distill_steps"]["defaultValue"] == 3
    assert "wrote" in capsys.readouterr().out


def test_config_errors_exit_2_with_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["compile", "--config", TINY, "--set", "distill.max_stepz=3", "-o", str(tmp_path / "p")])
    assert code == 2
    assert "max_stepz" in capsys.readouterr().err
    assert cli.main(["compile", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_parse_set_types_values() -> None:
    assert cli.parse_set(["a.b=3", "a.c=null", "a.d=x=y", "a.e=1e-4"]) == {
        "a.b": 3,
        "a.c": None,
        "a.d": "x=y",
        "a.e": 1e-4,  # PyYAML alone would give the string "1e-4"
    }
    with pytest.raises(ConfigError):
        cli.parse_set(["novalue"])
    with pytest.raises(ConfigError, match="unknown pipeline parameter"):
        cli.parse_params(["learning_rate=1"])


def _client() -> mock.MagicMock:
    client = mock.MagicMock(name="kfp.Client()")
    client.create_run_from_pipeline_package.return_value = SimpleNamespace(run_id="run-123")
    client.get_experiment.return_value = SimpleNamespace(experiment_id="exp-1")
    client.create_recurring_run.return_value = SimpleNamespace(recurring_run_id="rr-9")
    return client


def test_submit_passes_compiled_package_params_and_auth(capsys: pytest.CaptureFixture[str]) -> None:
    client = _client()
    seen: dict[str, object] = {}

    def create(pipeline_file: str, **kwargs: object) -> SimpleNamespace:
        seen["doc"] = next(yaml.safe_load_all(Path(pipeline_file).read_text()))
        seen.update(kwargs)
        return SimpleNamespace(run_id="run-123")

    client.create_run_from_pipeline_package.side_effect = create
    with mock.patch("kfp.Client", return_value=client) as Client:
        code = cli.main(
            [
                "submit",
                "--config",
                TINY,
                "--host",
                "https://kfp.example",
                "--token",
                "s3cr3t",
                "--param",
                "distill_learning_rate=0.001",
                "--param",
                "promotion_margin=0.01",
                "--set",
                "steps.skip_sft_baseline=true",
                "--run-name",
                "nightly",
                "--namespace",
                "team-a",
            ]
        )
    assert code == 0
    Client.assert_called_once_with(host="https://kfp.example", existing_token="s3cr3t", namespace="team-a")
    assert seen["arguments"] == {"distill_learning_rate": 0.001, "promotion_margin": 0.01}
    assert seen["run_name"] == "nightly" and seen["experiment_name"] == "otdistill"
    assert seen["enable_caching"] is True
    assert seen["doc"]["pipelineInfo"]["name"] == "tiny"
    # the switch is compile-time: the submitted package has no SFT-baseline training task (the work steps
    # sit in the exit handler's sub-DAG)
    tasks = seen["doc"]["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert "train-sft-2" not in tasks
    assert "reference-model" in tasks
    out = capsys.readouterr()
    assert "run-123" in out.out and "s3cr3t" not in out.out + out.err


def test_in_cluster_client_uses_defaults_and_sa_token_file(tmp_path: Path) -> None:
    with mock.patch("kfp.Client") as Client, mock.patch.dict("os.environ", {}, clear=False) as env:
        env.pop("KFP_TOKEN", None)
        kfp_ops.make_client(None)
        Client.assert_called_with(host=None, existing_token=None)
        token = tmp_path / "token"
        token.write_text("t")
        kfp_ops.make_client("http://h", sa_token_path=str(token))
        assert type(Client.call_args.kwargs["credentials"]).__name__ == "ServiceAccountTokenVolumeCredentials"


def test_schedule_create_list_pause_resume_delete(capsys: pytest.CaptureFixture[str]) -> None:
    client = _client()
    client.list_recurring_runs.side_effect = [
        SimpleNamespace(
            recurring_runs=[
                SimpleNamespace(
                    recurring_run_id="rr-9",
                    display_name="tiny",
                    status="ENABLED",
                    trigger=SimpleNamespace(cron_schedule=SimpleNamespace(cron="0 0 3 * * *")),
                )
            ],
            next_page_token="p2",
        ),
        SimpleNamespace(recurring_runs=None, next_page_token=""),
    ]
    with mock.patch("kfp.Client", return_value=client):
        base = ["--host", "http://kfp"]
        assert cli.main(["schedule", "create", "--config", TINY, "--cron", "0 0 3 * * *", *base]) == 0
        kwargs = client.create_recurring_run.call_args.kwargs
        assert kwargs["cron_expression"] == "0 0 3 * * *" and kwargs["experiment_id"] == "exp-1"
        assert kwargs["job_name"] == "tiny" and kwargs["no_catchup"] is True
        assert Path(kwargs["pipeline_package_path"]).suffix == ".yaml"
        assert cli.main(["schedule", "list", *base]) == 0
        assert client.list_recurring_runs.call_count == 2  # both pages
        assert cli.main(["schedule", "pause", "--id", "rr-9", *base]) == 0
        client.disable_recurring_run.assert_called_once_with("rr-9")
        assert cli.main(["schedule", "resume", "--id", "rr-9", *base]) == 0
        client.enable_recurring_run.assert_called_once_with("rr-9")
        assert cli.main(["schedule", "delete", "--id", "rr-9", *base]) == 0
        client.delete_recurring_run.assert_called_once_with("rr-9")
        assert cli.main(["schedule", "pause", *base]) == 2  # no --id
    out = capsys.readouterr().out
    assert "rr-9  ENABLED   0 0 3 * * *" in out


def test_schedule_rejects_five_field_cron(capsys: pytest.CaptureFixture[str]) -> None:
    client = _client()
    with mock.patch("kfp.Client", return_value=client):
        code = cli.main(["schedule", "create", "--config", TINY, "--cron", "0 3 * * *", "--host", "http://k"])
    assert code == 2
    assert 'did you mean "0 0 3 * * *"' in capsys.readouterr().err
    client.create_recurring_run.assert_not_called()


def test_schedule_creates_missing_experiment() -> None:
    client = _client()
    client.get_experiment.side_effect = ValueError("No experiment is found with name otdistill")
    client.create_experiment.return_value = SimpleNamespace(experiment_id="exp-new")
    with mock.patch("kfp.Client", return_value=client):
        assert (
            cli.main(["schedule", "create", "-c", TINY, "--cron", "0 0 * * * *", "--host", "http://k"]) == 0
        )
    assert client.create_recurring_run.call_args.kwargs["experiment_id"] == "exp-new"


def test_run_reports_config_errors_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher:\n  sauce: x\n")
    assert cli.main(["run", "--config", str(bad), "--run-dir", str(tmp_path / "run")]) == 2
    assert "unknown key(s) in teacher: sauce" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

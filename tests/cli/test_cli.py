"""The `otdistill` CLI: validate, config show and compile for real; submit (upload a pipeline version, run
it, wait) and schedule against a mocked kfp.Client with the real class's signatures (no KFP API server
runs here), asserting the calls the real client would receive."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import kfp
import pytest
import yaml

from otdistill import cli
from otdistill.config import ConfigError, RunConfig, load_config
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


def _client(*, pipeline_exists: bool = True) -> mock.MagicMock:
    """A kfp.Client with the real kfp 2.17 class's signatures (create_autospec): a call with an argument the
    real client does not take fails here too. No KFP API server runs here, so its answers are given."""
    client = mock.create_autospec(kfp.Client, instance=True)
    client.get_experiment.return_value = SimpleNamespace(experiment_id="exp-1")
    client.get_pipeline_id.return_value = "pl-1" if pipeline_exists else None
    client.upload_pipeline.return_value = SimpleNamespace(pipeline_id="pl-new")
    # an existing pipeline: no version of that name yet; a new one: the version its upload created
    versions = [] if pipeline_exists else [SimpleNamespace(pipeline_version_id="v-1")]
    client.list_pipeline_versions.return_value = SimpleNamespace(pipeline_versions=versions)
    client.upload_pipeline_version.return_value = SimpleNamespace(
        pipeline_id="pl-1", pipeline_version_id="v-2"
    )
    client.run_pipeline.return_value = SimpleNamespace(run_id="run-123")
    client.create_recurring_run.return_value = SimpleNamespace(recurring_run_id="rr-9")
    return client


def test_submit_uploads_a_version_and_runs_it(capsys: pytest.CaptureFixture[str]) -> None:
    client = _client()
    seen: dict[str, object] = {}

    def upload_version(path: str, name: str, **kwargs: object) -> SimpleNamespace:
        data = Path(path).read_bytes()
        seen.update(doc=next(yaml.safe_load_all(data)), name=name, digest=hashlib.sha256(data).hexdigest())
        return SimpleNamespace(pipeline_id="pl-1", pipeline_version_id="v-2")

    client.upload_pipeline_version.side_effect = upload_version
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
    client.get_pipeline_id.assert_called_once_with("tiny")
    client.upload_pipeline.assert_not_called()
    # the version is named by the package's content: an unchanged config re-uses it
    assert seen["name"] == f"tiny-{str(seen['digest'])[:12]}"
    assert client.upload_pipeline_version.call_args.kwargs["pipeline_id"] == "pl-1"
    assert client.list_pipeline_versions.call_args.kwargs["filter"].count(str(seen["name"])) == 1
    client.run_pipeline.assert_called_once_with(
        experiment_id="exp-1",
        job_name="nightly",
        params={"distill_learning_rate": 0.001, "promotion_margin": 0.01},
        pipeline_id="pl-1",
        version_id="v-2",
        service_account="otdistill-runner",
    )
    doc = seen["doc"]
    assert isinstance(doc, dict) and doc["pipelineInfo"]["name"] == "tiny"
    # the switch is compile-time: the uploaded package has no SFT-baseline training task (the work steps
    # sit in the exit handler's sub-DAG)
    tasks = doc["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert "train-sft-2" not in tasks
    assert "reference-model" in tasks
    out = capsys.readouterr()
    assert "https://kfp.example/#/runs/details/run-123" in out.out
    assert "s3cr3t" not in out.out + out.err
    client.get_run.assert_not_called()


def test_first_submit_creates_the_pipeline_and_runs_its_version() -> None:
    client = _client(pipeline_exists=False)
    with mock.patch("kfp.Client", return_value=client):
        assert (
            cli.main(["submit", "-c", TINY, "--host", "http://kfp", "--pipeline-name", "nightly-tiny"]) == 0
        )
    path = client.upload_pipeline.call_args.args[0]
    assert client.upload_pipeline.call_args.kwargs["pipeline_name"] == "nightly-tiny"
    assert path.endswith(".yaml") and not Path(path).exists()  # compiled into a temporary directory
    client.list_pipeline_versions.assert_called_once_with("pl-new", page_size=1)
    client.upload_pipeline_version.assert_not_called()
    kwargs = client.run_pipeline.call_args.kwargs
    assert (kwargs["pipeline_id"], kwargs["version_id"]) == ("pl-new", "v-1")


@pytest.mark.parametrize(("state", "code"), [("SUCCEEDED", 0), ("FAILED", 1), ("CANCELED", 1)])
def test_submit_wait_prints_the_url_and_final_state(
    state: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    client = _client()
    # a version of that content exists: it is run, nothing is uploaded
    client.list_pipeline_versions.return_value = SimpleNamespace(
        pipeline_versions=[SimpleNamespace(pipeline_version_id="v-old")]
    )
    # seen running once, then in its final state (CANCELED is final too: kfp's own loop spins on it)
    client.get_run.side_effect = [SimpleNamespace(state="RUNNING"), SimpleNamespace(state=state)]
    with (
        mock.patch("kfp.Client", return_value=client),
        mock.patch("otdistill.pipelines.submit.time.sleep") as sleep,
    ):
        argv = ["submit", "-c", TINY, "--host", "kfp.example:8888", "--wait", "--wait-timeout", "60"]
        assert cli.main(argv) == code
    client.upload_pipeline_version.assert_not_called()
    assert client.run_pipeline.call_args.kwargs["version_id"] == "v-old"
    assert [c.args for c in client.get_run.call_args_list] == [("run-123",), ("run-123",)]
    sleep.assert_called_once()
    out = capsys.readouterr().out
    assert f"run run-123 finished: {state} (http://kfp.example:8888/#/runs/details/run-123)" in out


def test_wait_for_run_gives_up_after_its_timeout() -> None:
    from otdistill.pipelines.submit import wait_for_run

    client = mock.Mock()
    client.get_run.return_value = SimpleNamespace(state="RUNNING")
    with pytest.raises(TimeoutError, match="run r-1 still RUNNING after 0.05 s"):
        wait_for_run(client, "r-1", timeout_s=0.05, poll_s=0.01)
    assert client.get_run.call_count >= 2


def test_submit_dry_run_contacts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with mock.patch("kfp.Client") as Client:
        argv = [
            "submit",
            "-c",
            TINY,
            "--dry-run",
            "--host",
            "https://kfp.example",
            "--param",
            "distill_steps=3",
        ]
        assert cli.main(argv) == 0
    Client.assert_not_called()
    out = capsys.readouterr().out
    assert "pipeline:   tiny\n" in out and "version:    tiny-" in out
    assert "host:       https://kfp.example" in out
    assert "  distill_steps: 3\n" in out and '  task: "dialogsum"' in out


def test_a_loss_parameter_is_compiled_in() -> None:
    """The `loss` run parameter decides whether distillation takes the teacher model (only a loss that
    needs the live teacher does): submit and schedule compile the config with it."""
    cfg = load_config(TINY)
    assert cfg.distill.loss == "multilevel_ot"
    assert cli.compiled_for(cfg, {"loss": "kl", "distill_steps": 3}).distill.loss == "kl"
    assert cli.compiled_for(cfg, {"distill_steps": 3}) is cfg


def test_validate_passes_a_shipped_cluster_config(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(ROOT / "configs" / "paper" / "opt-350m-dialogsum.yaml")
    assert cli.main(["validate", "--config", config]) == 0
    assert "ok (strict load, compile, cluster images)" in capsys.readouterr().out


def test_validate_lists_problems_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    # no GPU step, so compiling never looks at gpu_image: the cluster check does
    argv = ["validate", "-c", TINY, "--set", "cluster.gpus=0", "--set", "cluster.gpu_image=registry/x:latest"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "1 problem(s)" in err and "cluster.gpu_image: 'registry/x:latest' is not pinned" in err
    assert cli.main(["validate", "-c", TINY, "--set", "distill.max_stepz=3"]) == 2
    assert "max_stepz" in capsys.readouterr().err


def test_config_show_prints_the_resolved_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "show", "-c", TINY, "--set", "distill.learning_rate=5e-4"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["distill"]["learning_rate"] == 0.0005 and shown["name"] == "tiny"
    assert RunConfig.from_dict(shown) == load_config(TINY, {"distill.learning_rate": 5e-4})


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
        assert (kwargs["pipeline_id"], kwargs["version_id"]) == ("pl-1", "v-2")
        assert "pipeline_package_path" not in kwargs  # runs from the uploaded version
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

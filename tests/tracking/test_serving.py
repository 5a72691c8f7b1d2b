"""A registered student serves its task: raw input in, the answer alone out, as training prompted it.

The student here is the tiny random student taught one DialogSum example (dialogue -> summary) with the
training prompt, so the served model answering the raw dialogue with exactly that summary shows the prompt
it builds is training's; its answers must also equal the evaluation code's greedy generation for the same
rows. Everything runs on a local SQLite store; the HTTP test runs the real ``mlflow models serve``.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException

from otdistill.data import (
    Example,
    FieldTask,
    SideEncoder,
    build_prompt,
    encode_pair,
    get_task,
    list_tasks,
    task_from_dict,
    task_to_dict,
)
from otdistill.evaluation import EvalConfig, evaluate_model
from otdistill.tracking import (
    TrackingConfig,
    log_student_model,
    register_and_promote,
    resolve_alias,
    start_pipeline_run,
    step_run,
)
from otdistill.tracking.serving import PromptFormatError, first_input
from tests.servers.processes import ManagedProcess, free_port, http_ok
from tests.tiny_models import SHARED_DATA

NAME = "served-student"
EVAL = EvalConfig(max_new_tokens=48, batch_size=4, max_prompt_tokens=768, progress=False)


def _rows(task: str, n: int, shortest: bool = False) -> list[dict[str, Any]]:
    with open(SHARED_DATA / task / "validation.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    if shortest:
        rows.sort(key=lambda r: len(r["dialogue"]))
    return rows[:n]


ROW = _rows("dialogsum", 1, shortest=True)[
    0
]  # 209 characters, summary "Mr. Lee has something to express ..."


def _teach(student_dir: Path, out_dir: Path, row: dict[str, Any], steps: int = 200) -> Path:
    """A copy of the tiny student trained on `row` alone, with the training prompt (`encode_pair`), until
    it gives the response back (about 70 steps)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(student_dir)
    model = AutoModelForCausalLM.from_pretrained(student_dir)
    (feature,), _ = encode_pair(get_task("dialogsum").to_example(row, 0), [SideEncoder(tok)], max_length=4096)
    ids = torch.tensor([feature.input_ids])
    labels = ids.clone()
    labels[0, : feature.response_start] = -100
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.02:
            break
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def taught(tiny_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _teach(tiny_pair[1], tmp_path_factory.mktemp("taught"), ROW)


@pytest.fixture(scope="module")
def champion(taught: Path, tmp_path_factory: pytest.TempPathFactory) -> TrackingConfig:
    """The taught student logged by `log_student_model`, registered and promoted to @champion."""
    store = tmp_path_factory.mktemp("mlflow-serving")
    config = TrackingConfig(
        tracking_uri=f"sqlite:///{store}/mlflow.db",
        artifact_location=(store / "artifacts").as_uri(),
        experiment="serving",
        registered_model_name=NAME,
        race_settle_s=0.0,
    )
    with start_pipeline_run(config, "serving") as parent, step_run(parent, "register") as step:
        info = log_student_model(step, taught, task="dialogsum", input_example=ROW, eval_config=EVAL)
    assert register_and_promote(step.run_id, 0.3, config, model_uri=info.model_uri).promoted
    mlflow.set_tracking_uri(config.tracking_uri)
    mlflow.set_registry_uri(config.tracking_uri)
    return config


def _use(config: TrackingConfig) -> None:
    mlflow.set_tracking_uri(config.tracking_uri)
    mlflow.set_registry_uri(config.tracking_uri)


def test_champion_answers_a_raw_dialogue_with_the_summary_alone(
    taught: Path, champion: TrackingConfig
) -> None:
    _use(champion)
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    (answer,) = served.predict(pd.DataFrame([{"dialogue": ROW["dialogue"]}]))
    assert answer == ROW["summary1"]  # what it was taught, under training's prompt
    prompt = build_prompt(get_task("dialogsum").to_input(ROW), served.unwrap_python_model().tokenizer)
    assert ROW["dialogue"] not in answer and "Summarize" not in answer and prompt not in answer
    # The evaluation code, on the student directory and on the registered version, answers the same.
    direct = evaluate_model(str(taught), "dialogsum", [ROW], EVAL, label="direct")
    registered = evaluate_model(f"models:/{NAME}@champion", "dialogsum", [ROW], EVAL, label="champion")
    assert direct.records[0].prediction == registered.records[0].prediction == answer
    assert direct.records[0].prompt == prompt


def test_answers_equal_the_evaluation_generation_for_several_rows_and_params(
    taught: Path, champion: TrackingConfig
) -> None:
    _use(champion)
    rows = _rows("dialogsum", 5)
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    frame = pd.DataFrame([{"dialogue": r["dialogue"]} for r in rows])
    for params, cfg in (
        (None, EVAL),
        (
            {"max_new_tokens": 3, "batch_size": 2},
            EvalConfig(max_new_tokens=3, batch_size=2, max_prompt_tokens=768),
        ),
        ({"max_prompt_tokens": 40}, EvalConfig(max_new_tokens=48, batch_size=4, max_prompt_tokens=40)),
    ):
        expected = evaluate_model(str(taught), "dialogsum", rows, cfg, label="direct")
        assert served.predict(frame, params=params) == [r.prediction for r in expected.records], params


def test_signature_input_example_and_recorded_prompt_format(taught: Path, champion: TrackingConfig) -> None:
    from transformers import AutoTokenizer

    _use(champion)
    uri = f"models:/{NAME}@champion"
    info = mlflow.models.get_model_info(uri)
    signature = info.signature
    assert signature is not None and signature.params is not None
    assert signature.inputs.input_names() == ["dialogue"]
    assert [t.name for t in signature.inputs.input_types()] == ["string"]
    assert [t.name for t in signature.outputs.input_types()] == ["string"]
    assert {p.name: p.default for p in signature.params.params} == {
        "max_new_tokens": 48,
        "max_prompt_tokens": 768,
        "batch_size": 4,
    }
    local = Path(mlflow.artifacts.download_artifacts(uri))
    example = json.loads((local / "input_example.json").read_text())
    assert example == {"columns": ["dialogue"], "data": [[ROW["dialogue"]]]}
    serving = json.loads((local / "serving_input_example.json").read_text())
    assert serving["dataframe_split"]["columns"] == ["dialogue"]
    fmt = info.flavors["python_function"]["config"]
    tok = AutoTokenizer.from_pretrained(taught)
    assert fmt["task"]["name"] == "dialogsum"
    assert fmt["task"]["spec"]["instruction"] == "Summarize the following dialogue."
    assert fmt["chat_template"] == tok.chat_template and fmt["plain_template"] is None
    assert fmt["example_prompt"] == build_prompt(get_task("dialogsum").to_input(ROW), tok)
    assert (fmt["max_new_tokens"], fmt["max_prompt_tokens"], fmt["batch_size"]) == (48, 768, 4)
    requirements = (local / "requirements.txt").read_text()
    assert "otdistill==" in requirements and "torch==" in requirements


def test_bad_rows_are_refused_by_name(champion: TrackingConfig) -> None:
    _use(champion)
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    with pytest.raises(MlflowException, match="dialogue"):
        served.predict(pd.DataFrame([{"summary": "no dialogue here"}]))
    with pytest.raises(MlflowException, match="dialogue.*empty"):
        served.predict(pd.DataFrame([{"dialogue": "   "}]))
    with pytest.raises(MlflowException, match="unknown params"):
        served.unwrap_python_model().predict(None, pd.DataFrame([ROW]), params={"temperature": 0.7})


def test_a_prompt_format_this_code_does_not_reproduce_refuses_to_load(champion: TrackingConfig) -> None:
    _use(champion)
    uri = f"models:/{NAME}@champion"
    fmt = dict(mlflow.models.get_model_info(uri).flavors["python_function"]["config"])
    with pytest.raises(PromptFormatError, match="trained and evaluated on"):
        mlflow.pyfunc.load_model(
            uri, model_config={**fmt, "example_prompt": "### Instruction:\nsomething else"}
        )
    with pytest.raises(PromptFormatError, match="version"):
        mlflow.pyfunc.load_model(uri, model_config={**fmt, "format_version": 99})


def test_resolve_alias_gives_the_students_hugging_face_directory(
    taught: Path, champion: TrackingConfig, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    hf_dir = resolve_alias(NAME, "champion", champion, tmp_path / "champ")
    original, resolved = (
        load_file(str(taught / "model.safetensors")),
        load_file(str(hf_dir / "model.safetensors")),
    )
    assert original.keys() == resolved.keys()
    assert all(torch.equal(original[k], resolved[k]) for k in original)
    assert (hf_dir / "tokenizer.json").is_file()


@pytest.mark.parametrize(
    ("task", "fields"),
    [("qed", ["question_text", "paragraph_text"]), ("fairytaleqa", ["question", "story_section"])],
)
def test_qa_students_take_question_and_context(
    task: str, fields: list[str], tiny_pair: tuple[Path, Path], champion: TrackingConfig
) -> None:
    rows = _rows(task, 3)
    with start_pipeline_run(champion, task) as parent, step_run(parent, "register") as step:
        example = first_input(get_task(task), rows)
        info = log_student_model(step, tiny_pair[1], task=task, input_example=example)
    _use(champion)
    assert info.signature is not None and info.signature.inputs.input_names() == fields
    served = mlflow.pyfunc.load_model(info.model_uri)
    answers = served.predict(
        pd.DataFrame([{f: r[f] for f in fields} for r in rows]), params={"max_new_tokens": 8}
    )
    expected = evaluate_model(str(tiny_pair[1]), task, rows, EvalConfig(max_new_tokens=8), label="direct")
    assert answers == [r.prediction for r in expected.records]


def test_a_config_defined_task_is_rebuilt_from_its_record_without_registration() -> None:
    spec = {"name": "myqa", "metric": "rougeL", "instruction": "{q}", "context_field": "passage"}
    task = FieldTask.from_dict({**spec, "response_fields": ["a"]})
    rebuilt = task_from_dict(json.loads(json.dumps(task_to_dict(task))))
    assert rebuilt == task and rebuilt.input_fields == ["q", "passage"]
    assert rebuilt.to_input({"q": "Who?", "passage": "Ann did."}) == Example("0", "Who?", "Ann did.", "", [])
    assert "myqa" not in list_tasks()
    qed = task_from_dict(task_to_dict(get_task("qed")))
    assert type(qed).__name__ == "QEDTask" and list(qed.input_fields) == ["question_text", "paragraph_text"]


def test_mlflow_models_serve_answers_a_raw_dialogue_over_http(
    champion: TrackingConfig, tmp_path: Path
) -> None:
    """`mlflow models serve -m models:/<name>@champion --env-manager local`, queried as a client would."""
    port = free_port()
    server = ManagedProcess(
        "mlflow-models-serve",
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{NAME}@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "-p",
            str(port),
            "--workers",
            "1",
        ],
        tmp_path / "serve.log",
        env={
            # the venv's bin first: `mlflow models serve` runs `uvicorn` from PATH
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "MLFLOW_TRACKING_URI": champion.tracking_uri,
            "MLFLOW_REGISTRY_URI": champion.tracking_uri,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        },
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/ping"),
        start_timeout_s=90.0,
    )
    server.start()
    try:
        body = json.dumps({"dataframe_records": [{"dialogue": ROW["dialogue"]}]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert resp.status == 200
            reply = json.loads(resp.read())
        assert reply == {"predictions": [ROW["summary1"]]}
        bad = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"dataframe_records": [{"dialogue": ""}]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=60)
        assert err.value.code == 400 and "dialogue" in err.value.read().decode()
    finally:
        server.stop()
    assert not server.running

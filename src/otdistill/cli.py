"""The `otdistill` command: run the pipeline locally, or compile / submit / schedule it on Kubeflow.

    otdistill run --config configs/quickstart.yaml          # whole DAG on this machine (kfp.local)
    otdistill validate --config ...                         # strict load + compile + cluster checks
    otdistill config show --config ... --set distill.max_steps=10   # the resolved config as YAML
    otdistill compile --config configs/paper/... -o p.yaml  # KFP pipeline YAML
    otdistill submit --config ... --host https://kfp.example.com [--dry-run] [--wait]
    otdistill schedule create --config ... --host ... --cron "0 0 3 * * *"
    otdistill schedule list|pause|resume|delete ...
    otdistill reproduce models:/<name>/<version> --local      # rebuild a registered student, compare
    otdistill sweep --config configs/sweeps/cpu-small.yaml   # loss variants x seeds (--compile / --host)
    otdistill sweep --config ... --records A/records B/records --out T   # one table from earlier runs' rows

Every command takes `--set section.key=value` (repeatable) to override the config without editing it.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from otdistill.config import ConfigError, RunConfig, load_config

log = logging.getLogger("otdistill.cli")
# Each command imports what it needs when it runs (the module itself imports the config only), so that the
# light client (`pip install otdistill[client]`) can validate, compile, submit and schedule without the
# training stack; a command that needs more says which extra brings it.
MISSING_EXTRA_HINT = (
    "otdistill[client] validates, shows, compiles, submits and schedules; running the pipeline or its steps"
    " needs the training stack: pip install 'otdistill[all]'"
)
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def parse_set(values: Sequence[str] | None) -> dict[str, Any]:
    """``["distill.max_steps=10", "data.limit=null"]`` -> dotted overrides with YAML-typed values."""
    out: dict[str, Any] = {}
    for item in values or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(f"--set {key.strip()}: the value is not valid YAML: {exc}") from None
        if isinstance(value, str) and _FLOAT.match(value):
            value = float(value)  # PyYAML reads 1e-4 (no dot) as a string; on a command line it is a number
        out[key.strip()] = value
    return out


def parse_params(values: Sequence[str] | None, extra: Sequence[str] = ()) -> dict[str, Any]:
    """``--param name=value`` pipeline parameters (YAML-typed); names are checked against the pipeline's
    (PIPELINE_PARAMETERS, plus `extra`: a sweep's own)."""
    from otdistill.config import PIPELINE_PARAMETERS

    params = parse_set(values)
    allowed = [*PIPELINE_PARAMETERS, *extra]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown pipeline parameter(s): {', '.join(unknown)} (allowed: {', '.join(allowed)})"
        )
    return params


def compiled_for(cfg: RunConfig, params: dict[str, Any]) -> RunConfig:
    """The config a submit compiles: with the `loss` run parameter applied, because the loss decides the
    DAG's shape (only a loss needing the live teacher gives distillation the teacher model: the
    pipeline's `teacher_model_input`). The other parameters change no task's inputs."""
    return cfg.with_overrides({"distill.loss": params["loss"]}) if "loss" in params else cfg


def _config(args: argparse.Namespace) -> RunConfig:
    return load_config(args.config, parse_set(args.set))


def _uses_cluster(args: argparse.Namespace) -> bool:
    """Whether the config file has a `cluster` section or a --set names one (it is meant for a cluster)."""
    if any(key.split(".")[0] == "cluster" for key in parse_set(args.set)):
        return True
    data = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))  # loaded strictly before
    return isinstance(data, dict) and "cluster" in data


def cmd_validate(args: argparse.Namespace) -> int:
    from otdistill.pipelines.submit import check_config

    cfg = _config(args)
    cluster = _uses_cluster(args)
    problems = check_config(cfg, cluster=cluster)
    if problems:
        raise ConfigError(
            f"{args.config}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )
    checks = "strict load, compile" + (", cluster images" if cluster else "")
    print(f"{args.config}: ok ({checks})")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    print(_config(args).to_yaml(), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from otdistill.pipelines.local import run_local

    result = run_local(
        _config(args), run_dir=args.run_dir, fresh=args.fresh, runner=args.runner, resume=args.resume
    )
    print(result.summary())
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from otdistill.pipelines.submit import compile_pipeline

    path = compile_pipeline(_config(args), args.output)
    print(f"wrote {path}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    return _submit(args, _config(args))


def _submit(
    args: argparse.Namespace, cfg: RunConfig, build: Any = None, extra: dict[str, Any] | None = None
) -> int:
    """`submit` (and `sweep --host / --dry-run`): `build` the config's pipeline (default the main DAG),
    `extra` the defaults of its parameters beyond PIPELINE_PARAMETERS."""
    from otdistill.pipelines import submit as kfp_ops

    build = build or kfp_ops.build_pipeline
    params = parse_params(args.param, extra=list(extra or {}))
    cfg = compiled_for(cfg, params)
    if args.dry_run:
        with tempfile.TemporaryDirectory(prefix="otdistill-") as tmp:
            pkg = kfp_ops.package_pipeline(
                cfg, tmp, params=params, pipeline_name=args.pipeline_name, build=build, extra_parameters=extra
            )
        print("dry run: nothing was contacted; a submit would upload and start:")
        print(pkg.describe(args.host))
        print(f"run name:   {args.run_name or cfg.name} (experiment {args.experiment})")
        return 0
    client = kfp_ops.make_client(
        args.host, token=args.token, namespace=args.namespace, sa_token_path=args.sa_token_path
    )
    run_id = kfp_ops.submit(
        client,
        cfg,
        experiment=args.experiment,
        run_name=args.run_name,
        params=params,
        namespace=args.namespace,
        service_account=args.service_account or cfg.cluster.service_account,
        pipeline_name=args.pipeline_name,
        build=build,
    )
    url = kfp_ops.run_url(args.host, run_id)
    print(f"submitted run {run_id}: {url}")
    if not args.wait:
        return 0
    state = kfp_ops.wait_for_run(client, run_id, args.wait_timeout)
    print(f"run {run_id} finished: {state} ({url})")
    return 0 if state == kfp_ops.SUCCEEDED else 1


def cmd_schedule(args: argparse.Namespace) -> int:
    from otdistill.pipelines import submit as kfp_ops

    client = kfp_ops.make_client(
        args.host, token=args.token, namespace=args.namespace, sa_token_path=args.sa_token_path
    )
    if args.action == "create":
        if not args.config or not args.cron:
            raise ConfigError("schedule create needs --config and --cron")
        params = parse_params(args.param)
        cfg = compiled_for(_config(args), params)
        rid = kfp_ops.create_schedule(
            client,
            cfg,
            cron=args.cron,
            name=args.name,
            experiment=args.experiment,
            params=params,
            max_concurrency=args.max_concurrency,
            service_account=args.service_account or cfg.cluster.service_account,
            namespace=args.namespace,
            pipeline_name=args.pipeline_name,
        )
        print(f"created recurring run {rid} ({args.cron})")
    elif args.action == "list":
        for row in kfp_ops.list_schedules(client, experiment=args.experiment, namespace=args.namespace):
            print(f"{row['id']}  {row['status']:<8}  {row['cron']:<20}  {row['name']}")
    else:
        if not args.id:
            raise ConfigError(f"schedule {args.action} needs the recurring run id (--id)")
        {
            "pause": kfp_ops.pause_schedule,
            "resume": kfp_ops.resume_schedule,
            "delete": kfp_ops.delete_schedule,
        }[args.action](client, args.id)
        print(f"{args.action}d recurring run {args.id}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from otdistill import reproduce

    if bool(args.local) == bool(args.host):
        raise ConfigError("reproduce needs exactly one of --local and --host")
    overrides = parse_set(args.set)
    tracking_uri = args.tracking_uri or reproduce.find_tracking_uri(args.ref)
    if args.local:
        plan = reproduce.reproduce_local(
            args.ref, tracking_uri, overrides, run_dir=args.run_dir, tolerance=args.tolerance
        )
    else:
        from otdistill.pipelines import submit as kfp_ops

        client = kfp_ops.make_client(
            args.host, token=args.token, namespace=args.namespace, sa_token_path=args.sa_token_path
        )
        plan = reproduce.reproduce_on_cluster(
            args.ref,
            tracking_uri,
            client,
            overrides,
            experiment=args.experiment,
            namespace=args.namespace,
            service_account=args.service_account,
            wait_timeout=args.wait_timeout if args.wait else None,
            tolerance=args.tolerance,
        )
    print(plan.describe())
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """A sweep config: run it here (kfp.local), compile it (--compile), submit it (--host / --dry-run), or
    table the records of rows run earlier (--records)."""
    from otdistill.pipelines.sweep_pipeline import build_sweep_pipeline, sweep_parameters, sweep_summary
    from otdistill.sweep.config import load_sweep

    cfg, sweep = load_sweep(args.config, parse_set(args.set))
    if args.records:
        from otdistill.sweep.steps import aggregate_records

        if not args.out:
            raise ConfigError("--records needs --out: the folder the table is written to")
        files = aggregate_records(cfg, sweep, [Path(d) for d in args.records], Path(args.out))
        print(files["table"].read_text(encoding="utf-8"))
        print(f"wrote {', '.join(sorted(p.name for p in files.values()))} to {args.out}")
        return 0

    def build(config: RunConfig) -> Any:
        return build_sweep_pipeline(config, sweep)

    if args.compile:
        from otdistill.pipelines.submit import compile_pipeline

        print(f"wrote {compile_pipeline(cfg, args.compile, build)}")
        return 0
    if not (args.host or args.dry_run):
        from otdistill.pipelines.local import run_local

        result = run_local(
            cfg, run_dir=args.run_dir, fresh=args.fresh, runner=args.runner, resume=args.resume, build=build
        )
        print(sweep_summary(result))
        return 0
    return _submit(args, cfg, build, sweep_parameters(sweep))


def _add_config(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", "-c", required=required, help="run config YAML (see configs/)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. distill.max_steps=10",
    )


def _add_local_run(p: argparse.ArgumentParser) -> None:
    """The options of a run on this machine (kfp.local), the same for `run` and `sweep`."""
    p.add_argument(
        "--run-dir",
        default=None,
        help="local run: where outputs and the MLflow store go (default: local.run_root/<name>)",
    )
    p.add_argument("--fresh", action="store_true", help="local run: ignore the step cache of earlier runs")
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_ID",
        help="local run: run an earlier run of this run directory again under its id (as KFP's Retry"
        " does): its training steps and teacher cache resume from their checkpoints",
    )
    p.add_argument(
        "--runner",
        choices=["subprocess", "docker"],
        default="subprocess",
        help="local run: subprocess runs the steps in this environment; docker runs each step in the"
        " project's CPU image (docker/build-images.sh), host network",
    )


def _add_kfp(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="KFP API endpoint; omit inside the cluster (service account)")
    p.add_argument("--token", default=None, help="bearer token (default: env KFP_TOKEN if set)")
    p.add_argument(
        "--sa-token-path", default=None, help="projected service-account token file to authenticate with"
    )
    p.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user installs)")
    p.add_argument("--experiment", default="otdistill", help="KFP experiment")
    p.add_argument(
        "--service-account",
        default=None,
        help="Kubernetes service account the run's pods use (default: cluster.service_account)",
    )
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="pipeline parameter for this run")
    p.add_argument(
        "--pipeline-name",
        default=None,
        help="KFP pipeline the compiled package is uploaded to as a version (default: the config's name)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otdistill", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the whole pipeline on this machine (kfp.local)")
    _add_config(p)
    _add_local_run(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "validate",
        help="strict load, compile and (with a cluster section) cluster checks; exit 2 on problems",
    )
    _add_config(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("config", help="config tools: `config show` prints the resolved config")
    p.add_argument("action", choices=["show"])
    _add_config(p)
    p.set_defaults(func=cmd_config_show)

    p = sub.add_parser("compile", help="write the KFP pipeline YAML")
    _add_config(p)
    p.add_argument("--output", "-o", default="otdistill-pipeline.yaml")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("submit", help="start a run on a Kubeflow Pipelines cluster")
    _add_config(p)
    _add_kfp(p)
    p.add_argument("--run-name", default=None)
    p.add_argument(
        "--dry-run", action="store_true", help="compile and print what would be submitted; contact nothing"
    )
    p.add_argument(
        "--wait", action="store_true", help="wait for the run to finish; exit 1 unless it succeeded"
    )
    p.add_argument("--wait-timeout", type=int, default=7 * 24 * 3600, help="seconds --wait waits at most")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("schedule", help="create / list / pause / resume / delete recurring runs")
    p.add_argument("action", choices=["create", "list", "pause", "resume", "delete"])
    _add_config(p, required=False)
    _add_kfp(p)
    p.add_argument("--cron", default=None, help='KFP 6-field cron "sec min hour day month weekday"')
    p.add_argument("--name", default=None, help="recurring run name (default: the config's name)")
    p.add_argument("--id", default=None, help="recurring run id (pause / resume / delete)")
    p.add_argument("--max-concurrency", type=int, default=1)
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser(
        "reproduce",
        help="rebuild a registered student from the tracking store alone and compare it bit for bit",
    )
    p.add_argument(
        "ref", help="models:/<name>/<version>, models:/<name>@<alias>, or a pipeline's MLflow run id"
    )
    p.add_argument("--local", action="store_true", help="rebuild on this machine (kfp.local, every step)")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="the tracking store holding the model (default: env MLFLOW_TRACKING_URI, else the"
        " runs/*/mlflow.db that has it)",
    )
    p.add_argument(
        "--run-dir", default=None, help="--local: where the rebuild goes (default runs/<name>-reproduce)"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="largest absolute weight difference still reported as 'within tolerance' (default 0)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="change the recorded config: a deliberate deviation, recorded on the new run",
    )
    _add_kfp(p)
    p.add_argument("--wait", action="store_true", help="--host: wait for the run, then give the verdict")
    p.add_argument("--wait-timeout", type=int, default=7 * 24 * 3600, help="seconds --wait waits at most")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser(
        "sweep",
        help="loss variants x seeds as one pipeline (a sweep config: configs/sweeps/): run here, compile,"
        " or submit",
    )
    _add_config(p)
    _add_local_run(p)
    p.add_argument("--compile", default=None, metavar="OUTPUT", help="write the KFP pipeline YAML instead")
    _add_kfp(p)
    p.add_argument("--run-name", default=None)
    p.add_argument("--dry-run", action="store_true", help="compile and print what would be submitted")
    p.add_argument("--wait", action="store_true", help="wait for the run; exit 1 unless it succeeded")
    p.add_argument("--wait-timeout", type=int, default=7 * 24 * 3600, help="seconds --wait waits at most")
    p.add_argument(
        "--records",
        nargs="+",
        metavar="DIR",
        help="run nothing: table the row records of earlier runs (their sweep/records/ folders; runs that"
        " share a trunk, checked by their teachers' scores) into --out",
    )
    p.add_argument("--out", default=None, metavar="DIR", help="--records: where the table files go")
    p.set_defaults(func=cmd_sweep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (2 for config / usage errors, 1 for failures)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"otdistill: config error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if args.verbose:
            raise
        print(f"otdistill {args.command} failed: {exc}\n{MISSING_EXTRA_HINT}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.verbose:
            raise
        print(f"otdistill {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

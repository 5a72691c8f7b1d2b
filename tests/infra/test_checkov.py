"""Checkov on what is deployed and built: the rendered `dev` and `prod` overlays (kustomize output, so
components and patches are included) and every Dockerfile. No failed check is left: each is fixed, or
skipped in place with its reason (`checkov.io/skipN: CKV_...=reason` annotations on the workload, which
survive rendering; `# checkov:skip=CKV_...: reason` comments in the Dockerfiles).

Checkov runs from its own venv, `.venv-tools` (`make test-deps`): its pinned dependencies conflict with
constraints.txt. One run covers the real files and the mutated copies, because importing checkov takes
most of its ~20 s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.manifest_tools import MANIFESTS, OVERLAYS, REPO, documents, kustomize_build

CHECKOV = REPO / ".venv-tools" / "bin" / "checkov"
DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))


def _reports(stdout: str) -> list[dict[str, Any]]:
    """checkov -o json prints one JSON document per scanned directory (a report or a list of them)."""
    decoder, reports, at = json.JSONDecoder(), [], 0
    while stdout[at:].strip():
        document, end = decoder.raw_decode(stdout, at + len(stdout[at:]) - len(stdout[at:].lstrip()))
        reports += document if isinstance(document, list) else [document]
        at = end
    return reports


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, Any]]]:
    """(real dir, mutated dir, checkov's JSON reports) for the rendered overlays and Dockerfiles, and for
    copies with the skips removed."""
    if not CHECKOV.exists():
        raise FileNotFoundError(f"{CHECKOV} not found: install the pinned checkov with `make test-deps`")
    root = tmp_path_factory.mktemp("checkov")
    real, mutated = root / "real", root / "mutated"
    real.mkdir()
    mutated.mkdir()
    for overlay in OVERLAYS:
        text = kustomize_build(MANIFESTS / "overlays" / overlay)
        (real / f"{overlay}.yaml").write_text(text)
        docs = documents(text)
        for doc in docs:
            annotations = doc["metadata"].get("annotations", {})
            for key in [k for k in annotations if k.startswith("checkov.io/skip")]:
                del annotations[key]
            if "annotations" in doc["metadata"] and not annotations:
                del doc["metadata"]["annotations"]
        (mutated / f"{overlay}.yaml").write_text(yaml.safe_dump_all(docs))
    for path in DOCKERFILES:
        shutil.copy(path, real / path.name)
        text = path.read_text()
        (mutated / path.name).write_text(
            "\n".join(line for line in text.splitlines() if not line.startswith("# checkov:skip=")) + "\n"
        )
    result = subprocess.run(
        [str(CHECKOV), "--skip-download", "--compact", "-o", "json"]
        + ["--framework", "kubernetes", "dockerfile", "-d", str(real), "-d", str(mutated)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    # Exit 1 means "some check failed" (the mutated copies); anything else is checkov itself failing.
    assert result.returncode in (0, 1), result.stderr[-3000:]
    return real, mutated, _reports(result.stdout)


def _checks(reports: list[dict[str, Any]], kind: str, under: Path) -> list[dict[str, Any]]:
    return [
        check
        for report in reports
        for check in report.get("results", {}).get(kind, [])
        if Path(check.get("file_abs_path", "")).is_relative_to(under)
    ]


def test_no_failed_check_on_the_rendered_overlays_and_dockerfiles(
    scanned: tuple[Path, Path, list[dict[str, Any]]],
) -> None:
    real, _, reports = scanned
    failed = _checks(reports, "failed_checks", real)
    assert not failed, "\n".join(
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({Path(c['file_abs_path']).name})"
        for c in failed
    )
    passed = _checks(reports, "passed_checks", real)
    scanned_files = {Path(c["file_abs_path"]).name for c in passed}
    assert {f"{o}.yaml" for o in OVERLAYS} | {p.name for p in DOCKERFILES} <= scanned_files


def test_every_skip_gives_its_reason(scanned: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    real, _, reports = scanned
    skipped = _checks(reports, "skipped_checks", real)
    assert skipped, "the skips were not read: checkov would report them as failed"
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.strip()) > 20, f"{check['check_id']} on {check['resource']}: no reason given"


def test_the_skipped_checks_fail_without_their_skips(
    scanned: tuple[Path, Path, list[dict[str, Any]]],
) -> None:
    """The control: with the skip annotations and comments removed, the same checks fail."""
    real, mutated, reports = scanned
    skipped = {
        (c["check_id"], Path(c["file_abs_path"]).name) for c in _checks(reports, "skipped_checks", real)
    }
    failed = {
        (c["check_id"], Path(c["file_abs_path"]).name) for c in _checks(reports, "failed_checks", mutated)
    }
    assert skipped == failed

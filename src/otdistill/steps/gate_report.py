"""The promotion gate's decision as Markdown, for the KFP UI (the `register_and_promote` step's report).

Rendered from the step's RegisterResult alone: its tags hold every gate number (`otdistill.gate.*`) and
the evaluation scores (`otdistill.eval.*`), both for a fresh decision and for a re-run that finds the
version it registered earlier, so the report says the same thing either way.
"""

from __future__ import annotations

import math

from otdistill.steps.register_and_promote import CHALLENGER_ALIAS, EVAL_PREFIX, GATE_PREFIX, RegisterResult

MODELS_SCHEME = "models:/"


def _cell(text: object) -> str:
    """Text made safe for one Markdown table cell (reasons may hold `|` or line breaks)."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _number(raw: str | None) -> float | None:
    if raw is None or raw == "":
        return None
    value = float(raw)
    return value if math.isfinite(value) else None


def _model_name(model_uri: str) -> str:
    if not model_uri.startswith(MODELS_SCHEME) or "/" not in model_uri[len(MODELS_SCHEME) :]:
        raise ValueError(f"registry URI {model_uri!r} is not models:/<name>/<version>")
    return model_uri[len(MODELS_SCHEME) :].rsplit("/", 1)[0]


def _yes(raw: str | None) -> str:
    return "yes" if raw == "True" else "no"


def decision_markdown(result: RegisterResult) -> str:
    """The gate decision: candidate and score, comparators (SFT baseline; champion version, its score on
    this run's rows and where that score came from), the candidate's gain over each (with its bootstrap
    interval and number of rows under the bootstrap method), margin, decision and reason, registry URIs."""
    gate = {k[len(GATE_PREFIX) :]: v for k, v in result.tags.items() if k.startswith(GATE_PREFIX)}
    name, version = _model_name(result.model_uri), result.version
    alias = result.champion_alias or "champion"
    metric = result.metric or "promotion metric"
    champion_version = gate.get("champion_version") or None
    if result.promoted:
        holder = f"`{alias}` now on v{version}: `{MODELS_SCHEME}{name}@{alias}`"
    elif champion_version:
        holder = f"`{alias}` stays on v{champion_version}: `{MODELS_SCHEME}{name}@{alias}`"
    else:
        holder = f"no version holds `{alias}`"
    lines = [
        f"# Promotion gate: {name} v{version}",
        "",
        f"**Decision: {'promoted' if result.promoted else 'not promoted'}** (status `{result.status}`)",
        "",
        f"Reason: {result.reason or gate.get('reason') or 'not recorded'}",
        "",
    ]
    if gate.get("reason") and gate["reason"] != result.reason:  # the registry's words, then the gate's
        lines += [f"Gate: {gate['reason']}", ""]
    lines += [
        "| Registry | |",
        "|---|---|",
        f"| Candidate | `{_cell(result.model_uri)}` (alias `{CHALLENGER_ALIAS}`: "
        f"`{MODELS_SCHEME}{_cell(name)}@{CHALLENGER_ALIAS}`) |",
        f"| Champion alias | {_cell(holder)} |",
        "",
    ]
    candidate = _number(gate.get("candidate"))
    if candidate is None:
        lines.append(f"The gate's numbers are not recorded on v{version}.")
        return "\n".join(lines) + "\n"
    greater = gate.get("greater_is_better", "True") == "True"
    margin = gate.get("margin", "")
    bootstrap = gate.get("method") == "bootstrap"
    if bootstrap:
        level = _number(gate.get("confidence"))
        rule = (
            f"The lower bound of the candidate's gain ({f'{level:.0%} ' if level else ''}paired bootstrap "
            "interval over the rows) must be above the margin against each comparator present."
        )
        gain_header = "Candidate's gain [interval] (rows)"
    else:
        rule = "The candidate must beat each comparator present by more than the margin."
        gain_header = "Candidate's gain"
    lines += [
        f"## Comparison on this run's validation rows: {metric} "
        f"({'higher' if greater else 'lower'} is better), margin {margin}",
        "",
        rule,
        "",
        f"| Model | {_cell(metric)} | {gain_header} | Beats it by the margin | Score from |",
        "|---|---|---|---|---|",
        f"| Candidate: distilled student v{version} | {candidate:.6g} | | | evaluate |",
    ]

    def gain(other: float, side: str = "") -> str:
        point = f"{(candidate - other) if greater else (other - candidate):+.6g}"
        low, high = _number(gate.get(f"{side}_low")), _number(gate.get(f"{side}_high"))
        if not bootstrap or low is None or high is None:
            return point
        diff = _number(gate.get(f"{side}_diff"))
        return (
            f"{diff if diff is not None else 0.0:+.6g} [{low:+.6g}, {high:+.6g}] ({gate.get(f'{side}_rows')})"
        )

    baseline = _number(gate.get("baseline"))
    if baseline is None:
        lines.append("| SFT baseline | not trained in this run | | not required | |")
    else:
        lines.append(
            f"| SFT baseline (this run) | {baseline:.6g} | {gain(baseline, 'baseline')} | "
            f"{_yes(gate.get('beats_baseline'))} | evaluate |"
        )
    champion = _number(gate.get("champion"))
    source = _cell(gate.get("champion_source") or "")
    if champion_version is None:
        lines.append("| Champion | none yet | | not required | |")
    elif champion is None:
        lines.append(
            f"| Champion v{champion_version} | no comparable score | | "
            f"{_yes(gate.get('beats_champion'))} | {source} |"
        )
    else:
        lines.append(
            f"| Champion v{champion_version} | {champion:.6g} | {gain(champion, 'champion')} | "
            f"{_yes(gate.get('beats_champion'))} | {source} |"
        )
    scores = sorted(
        (k[len(EVAL_PREFIX) :].rsplit(".", 1)[0], v)
        for k, v in result.tags.items()
        if k.startswith(EVAL_PREFIX) and k.endswith("." + metric)
    )
    if scores:
        lines += ["", f"All models evaluated in this run ({metric}):", "", "| Model | Score |", "|---|---|"]
        lines += [f"| {_cell(label)} | {float(v):.6g} |" for label, v in scores]
    return "\n".join(lines) + "\n"

"""Per-version documents generated from the artefacts: a validation report in the structure of
SR 11-7 (conceptual soundness, outcome analysis, ongoing monitoring, limitations), a mapping to
the EU AI Act's Annex IV, and a CycloneDX SBOM of the Bento; and the check that blocks packaging
a version whose documents are older than it, or describe another version, or were edited.

Every statement is built from the evaluation (metrics, intervals, gates, validator figures),
the candidate's lineage and the spec (sources, data origin, features, thresholds); only
aggregates appear, never an applicant's values. `documents/manifest.json` on the version's MLflow
run records the version, when the documents were generated and the SHA-256 of each.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from importlib import metadata
from pathlib import Path

from lending_pipeline.ml.evaluate import data_statement
from lending_pipeline.spec import PipelineSpec

CARD = "model_card.md"
REPORT = "documents/validation_report.md"
ANNEX = "documents/annex_iv.md"
SBOM = "documents/sbom.cdx.json"
MANIFEST = "documents/manifest.json"
DESCRIBED = (CARD, REPORT, ANNEX)  # what the manifest vouches for at evaluation
WIDE_AUC_INTERVAL = 0.05


class DocumentsOutdated(RuntimeError):
    """A version's documents are older than it, describe another version, or were edited."""


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _f(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(evaluation: dict, metric: str) -> str:
    found = (evaluation.get("intervals") or {}).get(metric)
    if not found:
        return "no interval"
    return f"{found['level']:.0%} interval [{found['low']:.4f}, {found['high']:.4f}]"


def _header(kind: str, spec: PipelineSpec, evaluation: dict, generated_at: str) -> list[str]:
    return [
        f"# {kind}: {spec.name} model version {evaluation['version']}",
        "",
        f"- model version: `{evaluation['version']}` (MLflow run `{evaluation['run_id']}`)",
        f"- generated: {generated_at}, from the evaluation artefacts and spec digest "
        f"`{spec.digest[:12]}`",
        "",
    ]


def _evidence_limits(spec: PipelineSpec, evaluation: dict) -> list[str]:
    """Limitations read from the artefacts: data, evidence, fairness coverage, judging."""
    candidate = evaluation["reports"]["candidate"]
    gates = spec.gates
    notes = [data_statement(spec)]
    defaults = round(candidate["n"] * candidate["bad_rate"])
    if candidate["n"] < gates.min_split_rows or defaults < gates.min_split_defaults:
        notes.append(
            f"The out-of-time split holds {candidate['n']} applications and about {defaults} "
            f"defaults, below the spec's minimum ({gates.min_split_rows} / "
            f"{gates.min_split_defaults}): the gated figures are noisy."
        )
    auc = (evaluation.get("intervals") or {}).get("roc_auc")
    if auc and auc["high"] - auc["low"] > WIDE_AUC_INTERVAL:
        notes.append(
            f"The ROC-AUC interval is {auc['high'] - auc['low']:.3f} wide: the test split "
            "cannot tell apart models closer than that."
        )
    for name, values in candidate["fairness"].items():
        small = values["adverse_impact"].get("excluded_small_groups") or []
        if small:
            notes.append(
                f"Groups of {name} below min_group_size {gates.min_group_size} were not gated: "
                f"{', '.join(sorted(map(str, small)))}."
            )
    estimate_only = [
        g["gate"] for g in evaluation["gates"] if g.get("judged_on") != "conservative_bound"
    ]
    if estimate_only:
        notes.append(
            f"Gates judged on the point estimate, not the interval's bound: "
            f"{', '.join(estimate_only)}."
        )
    notes.append(
        "Trained on applications that were approved and matured; performance on declined or "
        "unseen segments is unknown (no reject inference)."
    )
    if not spec.proxies:
        notes.append("No proxies of protected attributes are declared (`proxies`).")
    return notes


def validation_report(
    spec: PipelineSpec, evaluation: dict, candidate: dict, generated_at: str
) -> str:
    """The validation report of one evaluated version, in the structure of SR 11-7."""
    reports = evaluation["reports"]
    result = reports["candidate"]
    lineage = candidate.get("lineage", {})
    model = spec.model
    lines = _header("Validation report", spec, evaluation, generated_at)
    lines += [
        "## 1. Purpose and scope",
        f"Probability of default within {spec.target.maturity_days} days for "
        f"{spec.description.strip().rstrip('.') or spec.name}. Decision cutoff "
        f"{evaluation['cutoff']:.4f} "
        f"(chosen on the validation split by "
        f"{'target approval rate' if model.cutoff.target_approval_rate else 'maximum bad rate'}).",
        "",
        "## 2. Conceptual soundness",
        "### Data",
        f"- {data_statement(spec)}",
        f"- Training range `{lineage.get('partition_range', 'n/a')}`; split digests: train "
        f"`{lineage.get('train_digest', 'n/a')[:12]}`, validation "
        f"`{lineage.get('validation_digest', 'n/a')[:12]}`, test "
        f"`{lineage.get('test_digest', 'n/a')[:12]}`.",
    ]
    for source in spec.sources:
        description = " ".join(source.description.split()) or "no description in the spec"
        pii = f"; PII pseudonymised at ingestion: {len(source.pii_columns)} column(s)"
        lines.append(
            f"- Source `{source.name}` ({source.format}, {len(source.columns)} columns"
            f"{pii if source.pii_columns else ''}): {description}"
        )
    lines.append(
        f"- Label: `{spec.target.column}` from `{spec.target.source}`, counted once matured "
        f"({spec.target.maturity_days} days); out-of-time split: the latest "
        f"{model.split.test_days} days tested, {model.split.validation_days} before for "
        "calibration and cutoff."
    )
    lines += ["", "### Method"]
    lines.append(
        f"- Model `{candidate.get('model_type', model.type)}` with parameters "
        f"{json.dumps(dict(model.params), sort_keys=True)}, seed {model.seed}, calibration "
        f"`{model.calibration}`."
    )
    if model.monotonic:
        constraints = ", ".join(
            f"{k} {'rising' if v > 0 else 'falling'}" for k, v in model.monotonic.items() if v
        )
        lines.append(
            f"- Monotonic constraints (risk direction declared in the spec): {constraints}."
        )
    lines.append(
        f"- {len(spec.features.model_inputs)} inputs ({len(spec.features.derived)} derived by "
        "declared expressions, computed by the same code in training and serving)."
    )
    if spec.protected_attributes:
        lines.append(
            f"- Protected attributes ({', '.join(spec.protected_attributes)}) are measured, "
            "never inputs."
        )
    baseline = reports.get("baseline")
    if baseline:
        lines.append(
            f"- Benchmark: a logistic scorecard on the same split, ROC-AUC "
            f"{baseline['roc_auc']:.4f} vs the candidate's {result['roc_auc']:.4f}."
        )
    proxies = (evaluation.get("validator_figures") or {}).get("proxies") or []
    for row in proxies:
        if "error" not in row:
            lines.append(
                f"- Declared proxy `{row['column']}` for {row['attribute']}: association with "
                f"the score {row['score_association']:+.3f} ({row['score_measure']}), with the "
                f"attribute {row['attribute_association']:.3f} ({row['attribute_measure']})."
            )
    lines += [
        "",
        "## 3. Outcome analysis (out-of-time split)",
        f"{result['n']} applications, default rate {result['bad_rate']:.4f}.",
        "",
        "| metric | candidate | interval | champion | baseline |",
        "|---|---|---|---|---|",
    ]
    for metric in (
        "roc_auc",
        "ks",
        "ece",
        "brier_skill",
        "approval_rate",
        "bad_rate_among_approved",
    ):
        cells = [_f((reports.get(r) or {}).get(metric)) for r in ("champion", "baseline")]
        lines.append(
            f"| {metric} | {_f(result.get(metric))} | {_interval(evaluation, metric)} | "
            f"{cells[0]} | {cells[1]} |"
        )
    lines += [
        "",
        "### Gates",
        "| gate | actual | judged on | threshold | result |",
        "|---|---|---|---|---|",
    ]
    for gate in evaluation["gates"]:
        lines.append(
            f"| {gate['gate']} | {_f(gate['actual'])} | {gate.get('judged_on', 'estimate')} | "
            f"{gate['direction']} {gate['threshold']:g} | {'pass' if gate['passed'] else 'FAIL'} |"
        )
    same = (evaluation.get("validator_figures") or {}).get("same_approval_rate") or {}
    if same:
        lines += ["", "### At the same approval rate"]
        for name, row in same.items():
            lines.append(
                f"- {name}: approval {row['approval_rate']:.4f}, bad rate among approved "
                f"{row['bad_rate_among_approved']:.4f}, goods declined "
                f"{row['declined_good_rate']:.4f}"
            )
    lines += ["", "### Fairness"]
    if not result["fairness"]:
        lines.append("No protected attributes declared.")
    for name, values in result["fairness"].items():
        impact = values["adverse_impact"]
        ratio = impact.get("min_ratio")
        lines.append(
            f"- {name}: lowest approval-rate ratio {_f(ratio, 3)} "
            f"(group {impact.get('min_group')}), equal-opportunity gap "
            f"{values['tpr_difference']['difference']:.3f}; groups compared: "
            f"{', '.join(sorted(impact['ratios'])) or 'none'}."
        )
    drift = spec.drift
    lines += [
        "",
        "## 4. Ongoing monitoring",
        f"- Daily drift report against the training population: PSI warn {drift.psi_warn:g}, "
        f"retrain {drift.psi_retrain:g} ({drift.bins} reference-quantile bins), missing-field "
        f"spike {drift.missing_spike:g}, judged from {drift.min_rows} rows a day; a retrain-tier "
        f"failure requests retraining (cooldown {drift.cooldown_hours:g} h).",
        f"- Realised performance on matured cohorts (last {drift.performance_window_days} days): "
        f"ROC-AUC may fall {drift.max_auc_drop:g} below the {result['roc_auc']:.4f} promised "
        f"here; bad rate among approved may rise {drift.max_bad_rate_rise:g} above "
        f"{result['bad_rate_among_approved']:.4f}.",
        f"- Fairness of served decisions per day (audit log): adverse impact ratio at least "
        f"{drift.served_fairness.min_adverse_impact_ratio:g} from "
        f"{drift.served_fairness.min_decisions} decisions.",
        f"- Scheduled retraining `{drift.retrain_schedule.cron}` "
        f"({drift.retrain_schedule.timezone}); every decision, promotion and rollback in the "
        "keyed audit log.",
        "",
        "## 5. Limitations",
        *[f"- {note}" for note in _evidence_limits(spec, evaluation)],
        "",
        "## 6. Conclusion",
        _conclusion(evaluation),
    ]
    return "\n".join(lines) + "\n"


def _conclusion(evaluation: dict) -> str:
    failed = [g["gate"] for g in evaluation["gates"] if not g["passed"]]
    if failed:
        return f"Not fit for promotion: failed gate(s) {', '.join(failed)}."
    return "Every gate passed; fit for promotion subject to the spec's approval policy."


# Annex IV point: (what it asks, where this version's evidence is, coverage)
ANNEX_IV = [
    ("1", "General description: purpose, provider, version, interaction with other systems"),
    ("2(a)", "Development methods and steps, pre-trained systems or tools used"),
    ("2(b)", "Design specifications: logic, key choices, what it optimises, trade-offs"),
    ("2(c)", "System architecture and computational resources"),
    ("2(d)", "Data requirements: datasheets, provenance, scope, labelling, cleaning"),
    ("2(e)", "Human oversight measures"),
    ("2(f)", "Pre-determined changes and continuous compliance"),
    ("2(g)", "Validation and testing procedures, metrics, test logs"),
    ("2(h)", "Cybersecurity measures"),
    ("3", "Monitoring, functioning and control: capabilities, limitations, foreseeable risks"),
    ("4", "Appropriateness of the performance metrics"),
    ("5", "Risk management system (Article 9)"),
    ("6", "Relevant changes through the lifecycle"),
    ("7", "Harmonised standards applied"),
    ("8", "EU declaration of conformity"),
    ("9", "Post-market monitoring plan (Article 72)"),
]


def annex_iv(spec: PipelineSpec, evaluation: dict, candidate: dict, generated_at: str) -> str:
    """Where each point of Annex IV finds its evidence for this version, and what the pipeline
    does not provide (a declaration or a standards list is the provider's to write)."""
    version, run = evaluation["version"], evaluation["run_id"]
    lineage = candidate.get("lineage", {})
    failed = [g["gate"] for g in evaluation["gates"] if not g["passed"]]
    verdict = "all passed" if not failed else "failed: " + ", ".join(failed)
    evidence = {
        "1": (
            f"Model card and validation report of version {version}; spec `{spec.name}` "
            f"(digest `{spec.digest[:12]}`); scoring service API (docs/serving.md).",
            "provided",
        ),
        "2(a)": (
            f"Spec `model` section; MLflow run `{run}` params; code version "
            f"`{lineage.get('code_version', 'n/a')[:12]}`; SBOM of the Bento ({SBOM}).",
            "provided",
        ),
        "2(b)": (
            f"Validation report §2 (model `{candidate.get('model_type', spec.model.type)}`, "
            f"calibration `{spec.model.calibration}`, monotonic constraints, cutoff "
            f"{evaluation['cutoff']:.4f}).",
            "provided",
        ),
        "2(c)": (
            "Dagster asset graph, BentoML service and its operation (docs/serving.md).",
            "partly",
        ),
        "2(d)": (
            f"{data_statement(spec)} Split digests and partition range "
            f"`{lineage.get('partition_range', 'n/a')}` on the model version.",
            "provided" if spec.data_origin.kind != "unspecified" else "partly",
        ),
        "2(e)": (
            "Promotion gates (blocking checks), kill switch and admin overrides in the scoring "
            "service, recorded in the audit log; sign-off per the spec's promotion policy.",
            "provided",
        ),
        "2(f)": (
            f"Retraining schedule `{spec.drift.retrain_schedule.cron}` and drift-triggered "
            "retraining, each candidate gated again before promotion.",
            "provided",
        ),
        "2(g)": (
            f"Validation report §3: out-of-time metrics with bootstrap intervals, "
            f"{len(evaluation['gates'])} gates ({verdict}); "
            f"evaluation artefacts on run `{run}`.",
            "provided",
        ),
        "2(h)": (
            "Bearer-token API roles, PII pseudonymised at ingestion, keyed audit chain with "
            "checkpoints; no penetration test record in the pipeline.",
            "partly",
        ),
        "3": (
            "Validation report §5 (limitations) and the model card's fairness sections.",
            "provided",
        ),
        "4": (
            "docs/spec.md (gates and their rationale); validation report §3 (intervals, "
            "comparison at the same approval rate).",
            "provided",
        ),
        "5": (
            "Gates and monitoring checks are controls; the risk management system itself "
            "(risk register, acceptance) is outside the pipeline.",
            "partly",
        ),
        "6": (
            "Promotion history and audit log (promotions, rollbacks), MLflow versions.",
            "provided",
        ),
        "7": (
            "Not recorded by the pipeline: the provider lists the standards applied.",
            "not provided",
        ),
        "8": ("Not produced by the pipeline: the provider's declaration.", "not provided"),
        "9": (
            "Monitoring job: drift, realised performance, served-decision fairness per day "
            "(validation report §4; docs/runbook.md).",
            "provided",
        ),
    }
    lines = _header("EU AI Act Annex IV mapping", spec, evaluation, generated_at)
    lines += [
        "Credit scoring of natural persons is a high-risk use (Annex III, point 5(b)). Where this "
        "version's technical documentation is found:",
        "",
        "| Annex IV point | asks for | evidence for this version | coverage |",
        "|---|---|---|---|",
    ]
    for point, asks in ANNEX_IV:
        text, coverage = evidence[point]
        lines.append(f"| {point} | {asks} | {text} | {coverage} |")
    return "\n".join(lines) + "\n"


def manifest(version: str, generated_at: str, texts: dict[str, str]) -> dict:
    return {
        "model_version": str(version),
        "generated_at": generated_at,
        "documents": {path: sha256(text) for path, text in sorted(texts.items())},
    }


def outdated(
    version: str, created: dt.datetime, found_manifest: dict | None, texts: dict[str, str | None]
) -> list[str]:
    """Why a version's documents cannot be trusted for packaging (empty when they can, or when
    there are none: a version never evaluated is refused by its gates, not here).

    `texts` maps each of `DESCRIBED` to its text on the version's run (None when absent)."""
    present = {path for path, text in texts.items() if text is not None}
    if not present and found_manifest is None:
        return []
    if found_manifest is None:
        return [f"{', '.join(sorted(present))} on the run without {MANIFEST}: re-evaluate"]
    problems = []
    if str(found_manifest.get("model_version")) != str(version):
        problems.append(
            f"documents describe model version {found_manifest.get('model_version')}, not {version}"
        )
    generated = dt.datetime.fromisoformat(found_manifest["generated_at"])
    if generated < created:
        problems.append(
            f"documents generated {generated.isoformat()} are older than model version "
            f"{version} (created {created.isoformat()})"
        )
    for path, digest in found_manifest.get("documents", {}).items():
        text = texts.get(path)
        if text is None:
            problems.append(f"{path} is missing")
        elif sha256(text) != digest:
            problems.append(f"{path} was changed after it was generated")
    return problems


def check_version_documents(client, registered: str, version: str) -> None:
    """Raise `DocumentsOutdated` naming each problem with the version's card, report and Annex
    IV mapping on its MLflow run (see `outdated`)."""
    info = client.get_model_version(registered, version)
    created = dt.datetime.fromtimestamp(info.creation_timestamp / 1000, dt.UTC)
    texts = {path: _artifact_text(client, info.run_id, path) for path in DESCRIBED}
    raw = _artifact_text(client, info.run_id, MANIFEST)
    problems = outdated(version, created, json.loads(raw) if raw else None, texts)
    if problems:
        raise DocumentsOutdated(
            f"model version {version} cannot be packaged: " + "; ".join(problems)
        )


def _artifact_text(client, run_id: str, path: str) -> str | None:
    import tempfile

    import mlflow

    folder = str(Path(path).parent) if "/" in path else ""
    names = {Path(a.path).name for a in client.list_artifacts(run_id, folder or None)}
    if Path(path).name not in names:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=scratch, tracking_uri=client.tracking_uri
        )
        return Path(local).read_text(encoding="utf-8")


def bento_requirements(bento_dir: Path | None, fallback: list[str]) -> list[str]:
    """The requirement lines of a built Bento (`env/python/requirements.txt`), else `fallback`."""
    path = Path(bento_dir) / "env" / "python" / "requirements.txt" if bento_dir else None
    if path is None or not path.exists():
        return list(fallback)
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-"))]


def bento_sbom(
    bento_tag: str,
    model_tag: str,
    model_version: str,
    code_digest: str,
    requirements: list[str],
    shadow: tuple[str, str] | None = None,
) -> str:
    """A CycloneDX 1.6 JSON SBOM of a Bento: the service (metadata component), the packaged
    model (and the shadow challenger's, as `(model tag, version)`), the project code, and every
    Python distribution its requirements pull in, resolved against the installed distributions
    (the environment the Bento was built from), with the dependency graph."""
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    bom = Bom()
    name, _, tag_version = bento_tag.partition(":")
    service = Component(
        name=name, version=tag_version, type=ComponentType.APPLICATION, bom_ref=f"bento:{bento_tag}"
    )
    bom.metadata.component = service
    model = Component(
        name=model_tag.partition(":")[0],
        version=str(model_version),
        type=ComponentType.MACHINE_LEARNING_MODEL,
        bom_ref=f"model:{model_tag}",
    )
    code = Component(
        name="lending_pipeline",
        version=code_digest[:12],
        type=ComponentType.LIBRARY,
        bom_ref="code:lending_pipeline",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=code_digest)],
    )
    models = [model]
    if shadow:
        models.append(
            Component(
                name=shadow[0].partition(":")[0],
                version=str(shadow[1]),
                type=ComponentType.MACHINE_LEARNING_MODEL,
                bom_ref=f"model:{shadow[0]}",
                description="shadow challenger: scored beside the champion, never served",
            )
        )
    components: dict[str, Component] = {}
    edges: dict[str, set[str]] = {}
    pending = [Requirement(line).name for line in requirements]
    roots = {canonicalize_name(n) for n in pending}
    while pending:
        key = canonicalize_name(pending.pop())
        if key in components:
            continue
        try:
            dist = metadata.distribution(key)
        except metadata.PackageNotFoundError:
            continue
        version = dist.version
        components[key] = Component(
            name=dist.metadata["Name"],
            version=version,
            type=ComponentType.LIBRARY,
            purl=PackageURL("pypi", None, key, version),
            bom_ref=f"pkg:pypi/{key}@{version}",
        )
        edges[key] = set()
        for line in dist.requires or []:
            required = Requirement(line)
            if required.marker and not required.marker.evaluate({"extra": ""}):
                continue
            edges[key].add(canonicalize_name(required.name))
            pending.append(required.name)
    for component in (*models, code, *components.values()):
        bom.components.add(component)
    bom.register_dependency(
        service, [*models, code, *(components[k] for k in sorted(roots) if k in components)]
    )
    for key, needed in edges.items():
        bom.register_dependency(
            components[key], [components[n] for n in sorted(needed) if n in components]
        )
    return JsonV1Dot6(bom).output_as_string(indent=2)

"""Evaluation and promotion: `model_evaluation` with one blocking check per gate (each naming
the version judged), the version's gate record, and `champion_model`, which moves the MLflow
alias only when every gate passed for that version (and, if required, after sign-off)."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd

from lending_pipeline.defs.blocking import require_passed_checks
from lending_pipeline.defs.common import OWNERS, blocking_check, product_check
from lending_pipeline.defs.metadata import (
    frame_table,
    image_markdown,
    metric_key,
    mlflow_run_metadata,
    rounded,
    runbook_metadata,
)
from lending_pipeline.defs.promotion import require_gates_for_version
from lending_pipeline.defs.resources import (
    MlflowTracking,
    local_file,
    read_table,
    spec_data_dir,
    warehouse_root,
    write_frame,
)
from lending_pipeline.defs.training import (
    CANDIDATE,
    TRAINING_SET,
    code_version,
    recorded_digests,
)
from lending_pipeline.ml import audit, documents, promotion, tracking
from lending_pipeline.ml.evaluate import (
    GATES,
    evaluate_gates,
    gate_intervals,
    gates_as_dicts,
    model_card,
    validator_figures,
)
from lending_pipeline.ml.gating import (
    evaluation_probabilities,
    fingerprint_differences,
    rescore_differences,
    stored_rows,
)
from lending_pipeline.ml.plots import approval_rates, evaluation_plots
from lending_pipeline.ml.promotion import INTEGRITY_GATE, record_gates
from lending_pipeline.ml.train import split_parts
from lending_pipeline.spec import PipelineSpec

EVALUATION = dg.AssetKey("model_evaluation")
CHAMPION_ASSET = dg.AssetKey("champion_model")
INTEGRITY = "model_evaluation_integrity"


def gate_check(gate: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(EVALUATION, f"model_evaluation_{gate}")


def gate_checks() -> list[dg.AssetCheckKey]:
    return [gate_check(g) for g in GATES] + [dg.AssetCheckKey(EVALUATION, INTEGRITY)]


def predictions_path(data_dir: Path, version: str):
    folder = warehouse_root(data_dir) / "model_evaluation"
    return folder / f"oot_predictions_v{version}.parquet"


def plots_dir(data_dir: Path, version: str):
    """Where the evaluation plots of a model version go (served with the reports)."""
    return data_dir / "reports" / "evaluation" / f"v{version}"


def gate_table(results) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "gate": g.gate,
                "actual": "n/a" if g.actual is None else round(g.actual, 4),
                "interval": g.interval_text(),
                "judged_on": g.judged_on,
                "threshold": f"{g.direction} {g.threshold:g}",
                "result": "pass" if g.passed else "FAIL",
            }
            for g in results
        ]
    )


def documents_dir(data_dir: Path, version: str):
    return data_dir / "reports" / "documents" / f"v{version}"


def version_documents(
    spec: PipelineSpec, evaluation: dict, candidate: dict, card: str
) -> tuple[dict[str, str], dict]:
    """The card, validation report and Annex IV mapping of the evaluated version (artifact path:
    text) and the manifest vouching for them."""
    generated_at = documents.now()
    texts = {
        documents.CARD: card,
        documents.REPORT: documents.validation_report(spec, evaluation, candidate, generated_at),
        documents.ANNEX: documents.annex_iv(spec, evaluation, candidate, generated_at),
    }
    return texts, documents.manifest(evaluation["version"], generated_at, texts)


def write_documents(data_dir: Path, version: str, texts: dict[str, str], manifest: dict):
    """The documents also as files under `<data dir>/reports/documents/v<version>/`."""
    folder = documents_dir(data_dir, version)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / name.split("/")[-1]).write_text(text, encoding="utf-8")
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder


def interval_table(intervals) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "metric": name,
                "estimate": round(i.estimate, 4),
                "low": round(i.low, 4),
                "high": round(i.high, 4),
                "level": f"{i.level:.0%}",
            }
            for name, i in intervals.items()
        ],
        columns=["metric", "estimate", "low", "high", "level"],
    )


def build_evaluation_assets(spec: PipelineSpec) -> list[dg.AssetsDefinition]:
    gates = spec.gates
    check_specs = [
        blocking_check(
            gate_check(name),
            f"Gate {name} {direction} {getattr(gates, name):g}: {why}.",
        )
        for name, (direction, why) in GATES.items()
    ]
    check_specs.append(
        blocking_check(
            dg.AssetCheckKey(EVALUATION, INTEGRITY),
            "The registered model, loaded back from the registry, re-scores the stored "
            "out-of-time rows to the logged gated metrics; fingerprints match.",
        )
    )

    @dg.asset(
        key=EVALUATION,
        ins={"candidate": dg.AssetIn(CANDIDATE), "training_set": dg.AssetIn(TRAINING_SET)},
        group_name="evaluation",
        kinds={"scikitlearn", "mlflow"},
        owners=OWNERS,
        check_specs=check_specs,
        description=(
            "The candidate, the current champion and a logistic scorecard baseline scored on the "
            "out-of-time split (touched once, here): ROC-AUC, Gini, KS, PR-AUC, Brier, ECE, "
            "approval and bad rates at the cutoff, expected loss, fairness per protected "
            "attribute; one blocking check per gate in the spec."
        ),
    )
    def model_evaluation(
        context: dg.AssetExecutionContext,
        mlflow: MlflowTracking,
        candidate: dict,
        training_set: pd.DataFrame,
    ):
        settings = mlflow.config(spec.name)
        data_dir = spec_data_dir(spec.name)
        parts = split_parts(training_set)
        train, test = parts["train"], parts["test"].reset_index(drop=True)
        cutoff = candidate["cutoff"]
        # the digest recorded with the training set (as the candidate's tags hold it): a step
        # in another process reads the frame back from storage, with dtypes of its own
        oot_digest = recorded_digests(context, spec, training_set)["test"]
        champion_version = tracking.alias_version(settings, tracking.CHAMPION)
        champion = None
        if champion_version and champion_version != candidate["version"]:
            champion = tracking.load_model(settings, champion_version)
        reports, probs = evaluation_probabilities(
            spec,
            train,
            test,
            cutoff,
            tracking.logged_or_load(settings, candidate["version"]),
            champion,
        )
        prob = probs["candidate"]
        intervals = gate_intervals(spec, test, probs, cutoff, reports)
        results = evaluate_gates(
            spec.gates, reports["candidate"], reports["baseline"], reports["champion"], intervals
        )

        path = predictions_path(data_dir, candidate["version"])
        write_frame(stored_rows(spec, test, prob), path)

        figures = validator_figures(spec, test, probs, reports["candidate"])
        plots = evaluation_plots(
            test["target"],
            prob,
            reports["candidate"],
            plots_dir(data_dir, candidate["version"]),
        )
        card = model_card(
            spec,
            candidate["version"],
            candidate["lineage"],
            reports,
            results,
            cutoff,
            intervals,
            figures,
        )
        interval_dicts = {name: i.as_dict() for name, i in intervals.items()}
        evaluation = {
            "version": candidate["version"],
            "oot_digest": oot_digest,
            "run_id": candidate["run_id"],
            "cutoff": cutoff,
            "champion_version": champion_version,
            "reports": reports,
            "gates": gates_as_dicts(results),
            "intervals": interval_dicts,
            "validator_figures": figures,
            "predictions": str(path),
            "model_card": card,
        }
        texts, doc_manifest = version_documents(spec, evaluation, candidate, card)
        folder = write_documents(data_dir, candidate["version"], texts, doc_manifest)
        with tracking.resume_run(settings, candidate["run_id"]) as mlflow_api:
            for role, values in reports.items():
                if values:
                    numbers = {k: v for k, v in values.items() if isinstance(v, int | float)}
                    mlflow_api.log_metrics({f"oot_{role}_{k}": v for k, v in numbers.items()})
            for gate in results:
                mlflow_api.set_tag(f"gate.{gate.gate}", "pass" if gate.passed else "fail")
            for name, text in texts.items():
                mlflow_api.log_text(text, name)
            mlflow_api.log_dict(doc_manifest, documents.MANIFEST)
            mlflow_api.log_dict(interval_dicts, "evaluation/intervals.json")
            mlflow_api.log_dict(figures, "evaluation/validator_figures.json")
            for name, interval in intervals.items():
                bounds = {"ci_low": interval.low, "ci_high": interval.high}
                mlflow_api.log_metrics({f"oot_candidate_{name}_{k}": v for k, v in bounds.items()})
            with local_file(path) as local:
                mlflow_api.log_artifact(str(local), "evaluation")
            for plot in plots.values():
                mlflow_api.log_artifact(str(plot), "plots")
        evaluation["documents"] = str(folder)
        yield dg.Output(
            evaluation,
            metadata={
                "candidate_version": candidate["version"],
                "oot_digest": oot_digest,
                "champion_version": champion_version or "none",
                **{
                    name: rounded(reports["candidate"][name])
                    for name in ("roc_auc", "ks", "ece", "approval_rate", "bad_rate_among_approved")
                },
                **mlflow_run_metadata(settings.tracking_uri, candidate["run_id"]),
                "plots": image_markdown(plots),
                **{
                    metric_key("approval_rate", attribute, group): rounded(rate)
                    for attribute, groups in approval_rates(reports["candidate"]).items()
                    for group, rate in groups.items()
                },
                "gates": frame_table(gate_table(results)),
                "intervals": frame_table(interval_table(intervals)),
                "model_card": dg.MetadataValue.md(card),
                "validation_report": dg.MetadataValue.md(texts[documents.REPORT]),
                "annex_iv": dg.MetadataValue.md(texts[documents.ANNEX]),
                "documents": dg.MetadataValue.path(str(folder)),
                "documents_in_mlflow": f"runs:/{candidate['run_id']}/documents",
            },
        )
        registered = tracking.load_model(settings, candidate["version"])  # from the registry
        differences = rescore_differences(
            spec, registered, read_table(path).to_pandas(), reports["candidate"], cutoff
        )
        differences |= fingerprint_differences(
            settings,
            candidate["version"],
            {
                "spec_digest": candidate["spec_digest"],
                "code_version": code_version(),
                "test_digest": oot_digest,
                "cutoff": cutoff,
                "model_type": candidate["model_type"],
            },
        )
        bound = {"candidate_version": candidate["version"], "oot_digest": oot_digest}
        record_gates(
            settings,
            candidate["version"],
            {**{g.gate: g.passed for g in results}, INTEGRITY_GATE: not differences},
            oot_digest,
            context.run_id,
        )
        for gate in results:
            yield dg.AssetCheckResult(
                check_name=gate_check(gate.gate).name,
                passed=gate.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=gate.describe(),
                metadata={
                    **bound,
                    "actual": rounded(gate.actual) if gate.actual is not None else "n/a",
                    "threshold": gate.threshold,
                    "direction": gate.direction,
                    "interval_low": rounded(gate.low) if gate.low is not None else "n/a",
                    "interval_high": rounded(gate.high) if gate.high is not None else "n/a",
                    "confidence_level": spec.gates.confidence_level,
                    "judged_on": gate.judged_on,
                    **runbook_metadata("model_evaluation_gates", gate.passed),
                },
            )
        yield dg.AssetCheckResult(
            check_name=INTEGRITY,
            passed=not differences,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                "the registered model, loaded back from the registry, re-scores the stored "
                "out-of-time rows to the logged gated metrics; spec, code, configuration and "
                "data fingerprints match"
                if not differences
                else f"differences from what was logged (logged, now): {differences}"
            ),
            metadata={
                **bound,
                "predictions": dg.MetadataValue.path(str(path)),
                **runbook_metadata("model_evaluation_integrity", not differences),
            },
        )

    @dg.asset(
        key=CHAMPION_ASSET,
        ins={"evaluation": dg.AssetIn(EVALUATION)},
        group_name="evaluation",
        kinds={"mlflow"},
        owners=OWNERS,
        description=(
            "The champion: when every gate passed for this very version (its checks' "
            "`candidate_version` and out-of-time digest, and its gate record in the registry), "
            "the MLflow alias `champion` moves to the candidate and the old champion keeps "
            "`previous`; the promotion is appended to the history and the audit log. With "
            "`promotion.approval: required` the version waits as pending for a person's "
            "sign-off (`approve_model_job`). A failed or stale gate leaves everything as it was."
        ),
    )
    def champion_model(
        context: dg.AssetExecutionContext, mlflow: MlflowTracking, evaluation: dict
    ) -> dg.Output:
        gates = [product_check(spec, check) for check in gate_checks()]
        require_passed_checks(context, gates)
        settings = mlflow.config(spec.name)
        version = evaluation["version"]
        require_gates_for_version(context, gates, version, evaluation.get("oot_digest"))
        by = context.run.tags.get("user", "dagster")
        try:
            promotion.require_deployable(settings, version, action="promote")
        except promotion.PromotionRefused as refusal:
            promotion.record_refusal(spec_data_dir(spec.name), refusal, "promote", version, by)
            raise dg.Failure(description=str(refusal)) from None
        signed = promotion.approval(settings, version)
        if spec.promotion.approval == "required" and (signed or {}).get("status") != "approved":
            return hold_for_approval(
                context, spec, settings, mlflow.history_path(spec.name), evaluation
            )
        old = tracking.promote(settings, version)
        candidate = evaluation["reports"]["candidate"]
        entry = {
            "event": "promotion",
            "registered_model": settings.registered_model,
            "version": version,
            "previous_version": old,
            "mlflow_run_id": evaluation["run_id"],
            "dagster_run_id": context.run_id,
            "by": by,
            "metrics": {k: candidate[k] for k in ("roc_auc", "ks", "ece", "approval_rate")},
        }
        tracking.append_history(mlflow.history_path(spec.name), entry)
        store = audit.open_store(spec_data_dir(spec.name))
        try:
            store.append("promotion", [entry])
            store.checkpoint_head()
        finally:
            store.close()
        return dg.Output(
            {"registered_model": settings.registered_model, "version": version, "previous": old},
            metadata={"champion_version": version, "previous_version": old or "none"},
        )

    return [model_evaluation, champion_model]


def hold_for_approval(
    context, spec: PipelineSpec, settings, history, evaluation: dict
) -> dg.Output:
    """`promotion.approval: required`: the version that passed every gate waits for sign-off;
    the champion stays as it is, with the pending version scored in its shadow (the registry's
    `challenger`) when the spec serves one."""
    version = evaluation["version"]
    champion = tracking.alias_version(settings, tracking.CHAMPION)
    promotion.mark_pending(settings, version)
    entry = {
        "event": "approval_pending",
        "registered_model": settings.registered_model,
        "version": version,
        "champion_version": champion,
        "mlflow_run_id": evaluation["run_id"],
        "dagster_run_id": context.run_id,
    }
    shadow = bool(spec.scoring and spec.scoring.shadow and champion)
    if shadow:  # the pending version gathers evidence on live traffic while it waits
        tracking.set_challenger(settings, version)
        entry["challenger"] = version
    promotion.audit_event(spec_data_dir(spec.name), "approval_pending", entry)
    tracking.append_history(history, entry)
    return dg.Output(
        {
            "registered_model": settings.registered_model,
            "version": champion,
            "pending": version,
            "challenger": version if shadow else None,
        },
        metadata={
            "champion_version": champion or "none",
            "pending_version": version,
            "approve": f"lending-pipeline approve {version} --by NAME --reason TEXT, "
            "or launch approve_model_job",
        },
    )

"""Evaluation and promotion: `model_evaluation` with one blocking check per gate, and
`champion_model`, which moves the MLflow alias only when every gate passed."""

import dagster as dg
import numpy as np
import pandas as pd

from lending_pipeline.defs.blocking import require_passed_checks
from lending_pipeline.defs.common import OWNERS, blocking_check
from lending_pipeline.defs.metadata import markdown_table, runbook_url
from lending_pipeline.defs.resources import (
    MlflowTracking,
    local_file,
    read_table,
    resolve_data_dir,
    warehouse_root,
    write_frame,
)
from lending_pipeline.defs.training import CANDIDATE, TRAINING_SET
from lending_pipeline.ml import audit, tracking
from lending_pipeline.ml.evaluate import (
    GATES,
    evaluate_gates,
    gates_as_dicts,
    integrity_differences,
    model_card,
    report,
)
from lending_pipeline.ml.train import build_pipeline, inputs, split_parts
from lending_pipeline.spec import PipelineSpec

EVALUATION = dg.AssetKey("model_evaluation")
CHAMPION_ASSET = dg.AssetKey("champion_model")
INTEGRITY = "model_evaluation_integrity"


def gate_check(gate: str) -> dg.AssetCheckKey:
    return dg.AssetCheckKey(EVALUATION, f"model_evaluation_{gate}")


def gate_checks() -> list[dg.AssetCheckKey]:
    return [gate_check(g) for g in GATES] + [dg.AssetCheckKey(EVALUATION, INTEGRITY)]


def predictions_path(version: str):
    folder = warehouse_root(resolve_data_dir()) / "model_evaluation"
    return folder / f"oot_predictions_v{version}.parquet"


def gate_table(results) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "gate": g.gate,
                "actual": "n/a" if g.actual is None else round(g.actual, 4),
                "threshold": f"{g.direction} {g.threshold:g}",
                "result": "pass" if g.passed else "FAIL",
            }
            for g in results
        ]
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
            "Gated metrics recomputed from the stored out-of-time predictions equal those logged.",
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
        parts = split_parts(training_set)
        train, test = parts["train"], parts["test"].reset_index(drop=True)
        cutoff = candidate["cutoff"]
        test_inputs = inputs(spec, test)

        def score(model) -> np.ndarray:
            return model.predict_proba(test_inputs)[:, 1]

        prob = score(tracking.logged_or_load(settings, candidate["version"]))
        reports = {"candidate": report(spec, test, prob, cutoff)}
        baseline = build_pipeline(spec, "logistic_scorecard")
        baseline.fit(inputs(spec, train), train["target"])
        reports["baseline"] = report(spec, test, score(baseline), cutoff)
        champion_version = tracking.alias_version(settings, tracking.CHAMPION)
        reports["champion"] = None
        if champion_version and champion_version != candidate["version"]:
            champion = tracking.load_model(settings, champion_version)
            reports["champion"] = report(spec, test, score(champion), cutoff)
        results = evaluate_gates(
            spec.gates, reports["candidate"], reports["baseline"], reports["champion"]
        )

        stored = test[[spec.entity.key, "target", *spec.protected_attributes]].copy()
        if spec.model.exposure_column:
            stored[spec.model.exposure_column] = test[spec.model.exposure_column]
        stored["prob"] = prob
        path = predictions_path(candidate["version"])
        write_frame(stored, path)

        card = model_card(
            spec, candidate["version"], candidate["lineage"], reports, results, cutoff
        )
        with tracking.resume_run(settings, candidate["run_id"]) as mlflow_api:
            for role, values in reports.items():
                if values:
                    numbers = {k: v for k, v in values.items() if isinstance(v, int | float)}
                    mlflow_api.log_metrics({f"oot_{role}_{k}": v for k, v in numbers.items()})
            for gate in results:
                mlflow_api.set_tag(f"gate.{gate.gate}", "pass" if gate.passed else "fail")
            mlflow_api.log_text(card, "model_card.md")
            with local_file(path) as local:
                mlflow_api.log_artifact(str(local), "evaluation")

        evaluation = {
            "version": candidate["version"],
            "run_id": candidate["run_id"],
            "cutoff": cutoff,
            "champion_version": champion_version,
            "reports": reports,
            "gates": gates_as_dicts(results),
            "predictions": str(path),
            "model_card": card,
        }
        yield dg.Output(
            evaluation,
            metadata={
                "candidate_version": candidate["version"],
                "champion_version": champion_version or "none",
                "roc_auc": reports["candidate"]["roc_auc"],
                "ks": reports["candidate"]["ks"],
                "ece": reports["candidate"]["ece"],
                "approval_rate": reports["candidate"]["approval_rate"],
                "bad_rate_among_approved": reports["candidate"]["bad_rate_among_approved"],
                "gates": markdown_table(gate_table(results)),
                "model_card": dg.MetadataValue.md(card),
            },
        )
        for gate in results:
            yield dg.AssetCheckResult(
                check_name=gate_check(gate.gate).name,
                passed=gate.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=gate.describe(),
                metadata={
                    "actual": gate.actual if gate.actual is not None else "n/a",
                    "threshold": gate.threshold,
                    "direction": gate.direction,
                    "runbook": runbook_url("model_evaluation_gates"),
                },
            )
        logged = read_table(path).to_pandas()
        differences = integrity_differences(spec, logged, reports["candidate"], cutoff)
        yield dg.AssetCheckResult(
            check_name=INTEGRITY,
            passed=not differences,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                "gated metrics recomputed from the stored predictions match"
                if not differences
                else f"recomputed metrics differ from the logged ones: {differences}"
            ),
            metadata={
                "predictions": dg.MetadataValue.path(str(path)),
                "runbook": runbook_url("model_evaluation_integrity"),
            },
        )

    @dg.asset(
        key=CHAMPION_ASSET,
        ins={"evaluation": dg.AssetIn(EVALUATION)},
        group_name="evaluation",
        kinds={"mlflow"},
        owners=OWNERS,
        description=(
            "The champion: when every gate passed, the MLflow alias `champion` moves to the "
            "candidate and the old champion keeps `previous`; the promotion is appended to the "
            "history. A failed gate leaves everything as it was."
        ),
    )
    def champion_model(
        context: dg.AssetExecutionContext, mlflow: MlflowTracking, evaluation: dict
    ) -> dg.Output:
        require_passed_checks(context, gate_checks())
        settings = mlflow.config(spec.name)
        version = evaluation["version"]
        old = tracking.promote(settings, version)
        candidate = evaluation["reports"]["candidate"]
        entry = {
            "event": "promotion",
            "registered_model": settings.registered_model,
            "version": version,
            "previous_version": old,
            "mlflow_run_id": evaluation["run_id"],
            "dagster_run_id": context.run_id,
            "by": context.run.tags.get("user", "dagster"),
            "metrics": {k: candidate[k] for k in ("roc_auc", "ks", "ece", "approval_rate")},
        }
        tracking.append_history(mlflow.history_path(), entry)
        store = audit.open_store(resolve_data_dir())
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

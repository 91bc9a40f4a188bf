"""Packaging: the champion as a Bento, made the desired deployment (`make serve` switches)."""

from pathlib import Path

import dagster as dg

from lending_pipeline.defs.common import OWNERS
from lending_pipeline.defs.evaluation import CHAMPION_ASSET
from lending_pipeline.defs.resources import MlflowTracking, spec_data_dir
from lending_pipeline.spec import PipelineSpec

BENTO_ASSET = dg.AssetKey("scoring_bento")


def build_packaging_assets(spec: PipelineSpec) -> list[dg.AssetsDefinition]:
    """The `scoring_bento` asset, for specs with a `scoring` section."""
    if spec.scoring is None:
        return []

    @dg.asset(
        key=BENTO_ASSET,
        ins={"champion": dg.AssetIn(CHAMPION_ASSET)},
        group_name="serving",
        kinds={"bentoml"},
        owners=OWNERS,
        output_required=False,
        description=(
            "The champion packaged for serving: model in the BentoML model store, a Bento "
            "tagged with the model version holding the service, spec and feature code; "
            "recorded as the desired deployment, which `make serve` switches to blue/green."
        ),
    )
    def scoring_bento(context: dg.AssetExecutionContext, mlflow: MlflowTracking, champion: dict):
        from lending_pipeline.serving.deploy import record_path
        from lending_pipeline.serving.operations import deploy_version

        data_dir = spec_data_dir(spec.name)
        version = champion["version"]
        if champion.get("pending"):
            context.log.info(
                f"version {champion['pending']} awaits approval: not deployed; "
                "`lending-pipeline approve` then `lending-pipeline package` deploy it"
            )
            if not (champion.get("challenger") and version):
                return
            context.log.info(
                f"champion {version} redeployed with {champion['pending']} in its shadow"
            )
        bundle = deploy_version(
            spec, mlflow.config(spec.name), version, data_dir, f"promotion ({context.run_id})"
        )
        sbom = write_sbom(mlflow.config(spec.name), bundle, data_dir)
        yield dg.Output(
            {"bento_tag": bundle.bento_tag, "model_tag": bundle.model_tag, "version": version},
            metadata={
                "sbom": dg.MetadataValue.path(str(sbom)),
                "bento_tag": bundle.bento_tag,
                "model_tag": bundle.model_tag,
                "model_version": version,
                "cutoff": bundle.cutoff,
                "deployment_record": dg.MetadataValue.path(str(record_path(data_dir))),
                "serve": "make serve (127.0.0.1:3001)",
            },
        )

    return [scoring_bento]


def write_sbom(config, bundle, data_dir: Path) -> Path:
    """The CycloneDX SBOM of the packaged Bento, next to the version's documents and on its
    MLflow run (`documents/sbom.cdx.json`)."""
    from lending_pipeline.ml import documents, tracking
    from lending_pipeline.serving.package import SERVING_PACKAGES, bentoml_home, code_digest

    name, _, version = bundle.bento_tag.partition(":")
    built = bentoml_home(data_dir) / "bentos" / name / version
    requirements = documents.bento_requirements(built, SERVING_PACKAGES)
    challenger = bundle.challenger
    shadow = (challenger["model_tag"], challenger["model_version"]) if challenger else None
    text = documents.bento_sbom(
        bundle.bento_tag,
        bundle.model_tag,
        bundle.model_version,
        code_digest(),
        requirements,
        shadow,
    )
    path = data_dir / "reports" / "documents" / f"v{bundle.model_version}" / "sbom.cdx.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    run_id = tracking.version_run(config, bundle.model_version).info.run_id
    with tracking.resume_run(config, run_id) as mlflow_api:
        mlflow_api.log_text(text, documents.SBOM)
    return path

"""Packaging: the champion as a Bento, made the desired deployment (`make serve` switches)."""

import dagster as dg

from lending_pipeline.defs.common import OWNERS
from lending_pipeline.defs.evaluation import CHAMPION_ASSET
from lending_pipeline.defs.resources import MlflowTracking, resolve_data_dir
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

        if champion.get("pending"):
            context.log.info(
                f"version {champion['pending']} awaits approval: nothing packaged; "
                "`lending-pipeline approve` then `lending-pipeline package` deploy it"
            )
            return
        data_dir = resolve_data_dir()
        version = champion["version"]
        bundle = deploy_version(
            spec, mlflow.config(spec.name), version, data_dir, f"promotion ({context.run_id})"
        )
        yield dg.Output(
            {"bento_tag": bundle.bento_tag, "model_tag": bundle.model_tag, "version": version},
            metadata={
                "bento_tag": bundle.bento_tag,
                "model_tag": bundle.model_tag,
                "model_version": version,
                "cutoff": bundle.cutoff,
                "deployment_record": dg.MetadataValue.path(str(record_path(data_dir))),
                "serve": "make serve (127.0.0.1:3001)",
            },
        )

    return [scoring_bento]

"""Package a registered model version as a Bento: model store entry, service code, spec, bundle.

The model version's MLflow directory (skops model, signature, input example) goes into the
BentoML model store as `<spec>_model:v<version>`; the Bento `<spec>_scoring:v<version>-<code>`
holds this package's code, the spec and `serving.json` (cutoff and reason-code references from
the training run). With a challenger version, its model goes in too (scored in the shadow of the
champion) and the tag reads `v<version>-c<challenger>-<code>`. Nothing is fetched from the
network: packages are not locked. Building an existing tag again is a no-op. BentoML reads
`BENTOML_HOME` once, at import, so the work runs in a child process (`package_version`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version as installed_version
from pathlib import Path

from lending_pipeline.ml.scoring import REFERENCE_ARTIFACT
from lending_pipeline.serving.bundle import BUNDLE_ENV, SPEC_FILE, Bundle

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SERVING_PACKAGES = [
    "bentoml",
    "mlflow",
    "skops",
    "scikit-learn",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "PyYAML",
    "psycopg",
    "orjson",
    "numba",
]


def bentoml_home(data_dir: Path) -> Path:
    return data_dir / "bentoml"


def bentoml_env(data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "BENTOML_HOME": str(bentoml_home(data_dir)),
        "BENTOML_DO_NOT_TRACK": "true",
    }


def code_digest() -> str:
    """Hash of the package's source files (what a Bento carries)."""
    digest = hashlib.sha256()
    for path in sorted(_code_files()):
        digest.update(str(path.relative_to(PACKAGE_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _code_files() -> list[Path]:
    files = [*PACKAGE_ROOT.rglob("*.py"), *PACKAGE_ROOT.glob("specs/*.yaml")]
    return [f for f in files if "__pycache__" not in f.parts]


def package_version(
    spec_file: Path,
    tracking_uri: str,
    registered: str,
    model_version: str,
    data_dir: Path,
    challenger: str | None = None,
) -> Bundle:
    """Build (or find) the Bento for a model version (and its shadow challenger), in a child
    process; its bundle."""
    command = [
        sys.executable,
        "-m",
        "lending_pipeline.serving.package",
        "--spec",
        str(spec_file),
        "--tracking-uri",
        tracking_uri,
        "--registered-model",
        registered,
        "--version",
        model_version,
        *(["--challenger", challenger] if challenger else []),
    ]
    result = subprocess.run(
        command, env=bentoml_env(data_dir), capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"packaging model version {model_version} failed:\n{result.stderr[-3000:]}"
        )
    return Bundle(**json.loads(result.stdout.strip().splitlines()[-1]))


def _build(
    spec_file: Path, tracking_uri: str, registered: str, model_version: str, challenger: str | None
) -> Bundle:
    import bentoml
    import mlflow

    from lending_pipeline.spec import load_spec

    spec = load_spec(spec_file)
    mlflow.set_tracking_uri(tracking_uri)
    code = code_digest()[:10]
    shadow = f"-c{challenger}" if challenger else ""
    bento_tag = f"{spec.name}_scoring:v{model_version}{shadow}-{code}"
    with tempfile.TemporaryDirectory() as scratch:
        champion = _store_model(spec.name, tracking_uri, registered, model_version, scratch)
        bundle = Bundle(
            spec_name=spec.name,
            spec_digest=spec.digest,
            registered_model=registered,
            bento_tag=bento_tag,
            challenger=(
                _store_model(spec.name, tracking_uri, registered, challenger, scratch)
                if challenger
                else None
            ),
            **champion,
        )
        if not _exists(bentoml.get, bento_tag):
            context = Path(scratch) / "context"
            shutil.copytree(
                PACKAGE_ROOT,
                context / "lending_pipeline",
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
            shutil.copyfile(spec_file, context / SPEC_FILE)
            bundle.save(context)
            os.environ[BUNDLE_ENV] = str(context)
            name, version = bento_tag.split(":")
            models = [bundle.model_tag, *([bundle.challenger["model_tag"]] if challenger else [])]
            bentoml.build(
                "lending_pipeline.serving.service:Scoring",
                name=name,
                version=version,
                build_ctx=str(context),
                include=["lending_pipeline/**", SPEC_FILE, "serving.json"],
                labels={
                    "spec": spec.name,
                    "model_version": model_version,
                    "challenger": challenger or "",
                },
                description=f"{spec.name} scoring service, model version {model_version}",
                python={
                    "lock_packages": False,
                    "packages": [f"{p}=={installed_version(p)}" for p in SERVING_PACKAGES],
                },
                models=models,
            )
    return bundle


def _store_model(spec_name: str, tracking_uri: str, registered: str, version: str, scratch) -> dict:
    """Put a model version in BentoML's model store (once); what a bundle says of it."""
    import bentoml
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(client.get_model_version(registered, version).run_id)
    model_tag = f"{spec_name}_model:v{version}"
    reference = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=f"{scratch}/ref{version}"
    )
    if not _exists(bentoml.models.get, model_tag):
        local = mlflow.artifacts.download_artifacts(
            f"models:/{registered}/{version}", dst_path=f"{scratch}/model{version}"
        )
        labels = {"spec": spec_name, "model_version": version}
        with bentoml.models.create(model_tag, labels=labels) as stored:
            shutil.copytree(local, stored.path, dirs_exist_ok=True)
    return {
        "model_version": version,
        "model_tag": model_tag,
        "kind": run.data.params["model_type"],
        "cutoff": float(run.data.params["cutoff"]),
        "reference": json.loads(Path(reference).read_text(encoding="utf-8")),
        "code_version": run.data.tags.get("code_version", ""),
    }


def _exists(getter, tag: str) -> bool:
    from bentoml.exceptions import NotFound

    try:
        getter(tag)
    except NotFound:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--registered-model", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--challenger", help="a model version to score in the shadow")
    args = parser.parse_args()
    bundle = _build(
        args.spec, args.tracking_uri, args.registered_model, args.version, args.challenger
    )
    print(json.dumps(bundle.__dict__, sort_keys=True))


if __name__ == "__main__":
    main()

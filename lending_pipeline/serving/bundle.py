"""What a Bento carries besides code: the model's identity, cutoff, reason-code references and
the spec, in `serving.json` + `spec.yaml` at the root of the Bento's source."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

BUNDLE_ENV = "LENDING_SERVING_BUNDLE"
BUNDLE_FILE = "serving.json"
SPEC_FILE = "spec.yaml"


@dataclass(frozen=True)
class Bundle:
    spec_name: str
    spec_digest: str
    registered_model: str
    model_version: str
    model_tag: str
    bento_tag: str
    kind: str
    cutoff: float
    reference: dict
    code_version: str
    challenger: dict | None = None  # model_version, model_tag, kind, cutoff, reference

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(asdict(self), indent=2, sort_keys=True)
        (directory / BUNDLE_FILE).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Bundle:
        path = directory / BUNDLE_FILE
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise RuntimeError(f"serving bundle '{path}' cannot be read: {exc}") from None


def bundle_dir() -> Path:
    """`LENDING_SERVING_BUNDLE`, else the root of the Bento source this code is running from."""
    if os.environ.get(BUNDLE_ENV):
        return Path(os.environ[BUNDLE_ENV])
    return Path(__file__).resolve().parents[2]

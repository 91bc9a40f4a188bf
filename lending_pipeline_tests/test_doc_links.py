"""Every link a reader can follow in README.md and docs/*.md resolves: a file of the repository
(and the anchor in it), a service `make` starts on loopback, or a known public site."""

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from lending_pipeline.docs_server import slug
from lending_pipeline_tests.ui import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HREF = re.compile(r'<a\s[^>]*href="([^"]+)"')
CODE = re.compile(r"```.*?```", re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
ANCHOR = re.compile(r'<a\s+(?:id|name)="([^"]+)"')
PUBLIC_SITES = {
    "github.com",
    "docs.dagster.io",
    "mlflow.org",
    "www.mlflow.org",
    "docs.bentoml.com",
    "docs.evidentlyai.com",
    "pandera.readthedocs.io",
    "docs.greatexpectations.io",
    "scikit-learn.org",
    "pypi.org",
    "docs.python.org",
    "www.postgresql.org",
    "www.haproxy.org",
    "playwright.dev",
    "en.wikipedia.org",
}
LOOPBACK_PORTS = {3000, 3001, 3002, 5000, 8000}  # make dev / make serve


def links(path: Path) -> list[str]:
    text = INLINE_CODE.sub("", CODE.sub("", path.read_text(encoding="utf-8")))
    return LINK.findall(text) + HREF.findall(text)


def anchors(path: Path) -> set[str]:
    text = CODE.sub("", path.read_text(encoding="utf-8"))
    return set(ANCHOR.findall(text)) | {slug(h) for h in HEADING.findall(text)}


def problem(doc: Path, target: str) -> str | None:
    """Why the link does not resolve, or None."""
    parts = urlsplit(target)
    if parts.scheme in ("http", "https"):
        if parts.hostname == "127.0.0.1":
            return None if parts.port in LOOPBACK_PORTS else f"unknown loopback port {parts.port}"
        return None if parts.hostname in PUBLIC_SITES else f"not a known public site: {target}"
    if parts.scheme == "mailto":
        return None
    if parts.scheme:
        return f"scheme {parts.scheme}: is not openable from the docs ({target})"
    file = (doc.parent / unquote(parts.path)).resolve() if parts.path else doc
    if not file.is_relative_to(ROOT):
        return f"outside the repository: {target}"
    if not file.exists():
        return f"no such file: {target}"
    if parts.fragment and file.suffix == ".md" and parts.fragment not in anchors(file):
        return f"no anchor #{parts.fragment} in {file.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(doc):
    found = links(doc)
    broken = [(target, why) for target in found if (why := problem(doc, target))]
    assert not broken, broken


def test_the_checker_catches_broken_links(tmp_path):
    doc = ROOT / "docs" / "runbook.md"
    assert problem(doc, "#validated_source_schema") is None
    assert problem(doc, "spec.md#gates") is None
    assert problem(doc, "#fix-and-re-materialize-a-partition") is None
    assert "no anchor" in problem(doc, "#no-such-entry")
    assert "no such file" in problem(doc, "deployment-guide.md")
    assert "outside the repository" in problem(doc, "../../shared/DESIGN.md")
    assert "file" in problem(doc, "file:///etc/passwd")
    assert "public site" in problem(doc, "https://example.invalid/page")
    assert len(links(ROOT / "README.md")) > 5

"""The docs and reports over http on loopback, so links in the Dagster UI open in the browser.

Serves `README.md` and `docs/` (markdown rendered as HTML, headings with GitHub-style anchors,
other files as they are) and `<data dir>/reports/` (Evidently reports, plots). Nothing outside
those folders is reachable. `python -m lending_pipeline.docs_server [--port N]`; `make dev`
starts it beside the Dagster UI.
"""

from __future__ import annotations

import argparse
import html
import mimetypes
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from markdown_it import MarkdownIt

from lending_pipeline.links import REPO_ROOT, docs_port

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
        padding: 0 1rem; color: #1f2328; }}
code, pre {{ font: 13px ui-monospace, monospace; background: #f6f8fa; }}
pre {{ padding: .75rem; overflow: auto; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #d0d7de; padding: 4px 8px; }}
:target {{ background: #fff8c5; }}
</style></head>
<body>{body}</body></html>
"""


def slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def render_markdown(text: str, title: str) -> str:
    """A markdown page as a standalone HTML page; headings get ids for `#anchor` links (unless
    the page already names that id with an `<a id=...>`)."""
    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    tokens = md.parse(text)
    taken = set(re.findall(r'<a id="([^"]+)"', text))
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            inline = tokens[i + 1]
            anchor = slug("".join(c.content for c in inline.children or []))
            if anchor not in taken:
                token.attrSet("id", anchor)
                taken.add(anchor)
    body = md.renderer.render(tokens, md.options, {})
    return PAGE.format(title=html.escape(title), body=body)


class DocsSite:
    """What the server may serve: URL path -> file (None outside the served folders)."""

    def __init__(self, data_dir: Path, repo_root: Path = REPO_ROOT):
        self.roots = {
            "docs": (repo_root / "docs").resolve(),
            "reports": (data_dir / "reports").resolve(),
        }
        self.readme = (repo_root / "README.md").resolve()

    def resolve(self, url_path: str) -> Path | None:
        parts = [p for p in unquote(urlsplit(url_path).path).split("/") if p]
        if parts in ([], ["README.md"]):
            return self.readme
        if len(parts) < 2 or parts[0] not in self.roots or ".." in parts:
            return None
        root = self.roots[parts[0]]
        path = root.joinpath(*parts[1:]).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path


def handler_for(site: DocsSite) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            path = site.resolve(self.path)
            if path is None:
                self.send_error(HTTPStatus.NOT_FOUND, "not served here")
                return
            if path.suffix == ".md":
                title = path.stem if path != site.readme else "lending_pipeline"
                body = render_markdown(path.read_text(encoding="utf-8"), title).encode()
                kind = "text/html; charset=utf-8"
            else:
                body = path.read_bytes()
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args) -> None:  # noqa: A002
            """Quiet: the Dagster UI's terminal stays readable."""

    return Handler


def start(data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve in a daemon thread; returns the server (`.shutdown()` to stop)."""
    server = ThreadingHTTPServer(
        (host, docs_port() if port is None else port), handler_for(DocsSite(data_dir))
    )
    threading.Thread(target=server.serve_forever, name="docs-server", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    from lending_pipeline.defs.resources import resolve_data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="default LENDING_DOCS_PORT or 3002")
    parser.add_argument("--data-dir", default=None, help="default LENDING_DATA_DIR or data/")
    args = parser.parse_args(argv)
    server = start(resolve_data_dir(args.data_dir), args.port)
    print(f"docs and reports on http://127.0.0.1:{server.server_address[1]}/docs/runbook.md")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()

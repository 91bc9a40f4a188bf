"""`lending-pipeline` commands for serving: serve, package, rollback, token, audit verify."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from lending_pipeline.spec import load_spec


def _data_dir(args) -> Path:
    from lending_pipeline.defs.resources import resolve_data_dir

    return resolve_data_dir(getattr(args, "data_dir", None))


def _registry(args):
    """Spec, data dir (exported for the resources), MLflow registry config, promotion history."""
    from lending_pipeline.defs.resources import MlflowTracking

    spec = load_spec(args.spec)
    data_dir = _data_dir(args)
    os.environ["LENDING_DATA_DIR"] = str(data_dir)
    tracking = MlflowTracking()
    return spec, data_dir, tracking.config(spec.name), tracking.history_path()


def cmd_serve(args) -> int:
    from lending_pipeline.ml.pii import PiiKeyError
    from lending_pipeline.serving.auth import TokenConfigError
    from lending_pipeline.serving.deploy import SLOTS, serve
    from lending_pipeline.serving.proxy import ProxyError

    slots = dict(zip(SLOTS, args.slot_ports, strict=True)) if args.slot_ports else None
    try:
        serve(_data_dir(args), args.port, slots)
    except (RuntimeError, ProxyError, TokenConfigError, PiiKeyError) as exc:
        print(f"serve refused: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_package(args) -> int:
    from lending_pipeline.ml import tracking
    from lending_pipeline.serving.operations import deploy_version

    spec, data_dir, config, _ = _registry(args)
    version = args.version or tracking.alias_version(config, tracking.CHAMPION)
    if version is None:
        print("no champion model yet: run `make demo` or `lending-pipeline train`", file=sys.stderr)
        return 1
    bundle = deploy_version(spec, config, version, data_dir, reason=args.reason)
    print(f"bento {bundle.bento_tag} (model version {version}) is the desired deployment")
    return 0


def cmd_rollback(args) -> int:
    from lending_pipeline.serving.deploy import read_record
    from lending_pipeline.serving.operations import RollbackError, active_version, rollback

    spec, data_dir, config, history = _registry(args)
    try:
        done = rollback(spec, config, history, data_dir, to_version=args.to)
    except RollbackError as exc:
        print(f"rollback refused: {exc}", file=sys.stderr)
        return 1
    if done.get("noop"):
        print(f"version {done['to_version']} is already the champion: nothing to do")
        return 0
    print(
        f"champion is now version {done['to_version']} (was {done['from_version']}); "
        f"bento {done['bento_tag']} requested"
    )
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        if active_version(data_dir) == done["to_version"]:
            print(f"serving version {done['to_version']}")
            return 0
        time.sleep(0.5)
    if args.wait:
        last = read_record(data_dir)["history"][-1]
        print(f"the server has not switched yet (last event: {last['event']})", file=sys.stderr)
        return 1
    print("`make serve` switches to it when running")
    return 0


def cmd_token(args) -> int:
    from lending_pipeline.serving.auth import new_token

    token, line = new_token(args.caller, args.role)
    if args.file:
        path = Path(args.file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        path.chmod(0o600)
        print(f"added caller '{args.caller}' ({args.role}) to {path}", file=sys.stderr)
    else:
        print(f"add this line to LENDING_API_TOKENS or the token file:\n{line}", file=sys.stderr)
    print(token)
    return 0


def cmd_audit_verify(args) -> int:
    from lending_pipeline.ml import audit

    store = audit.open_store(_data_dir(args))
    try:
        result = audit.verify(store.entries())
    finally:
        store.close()
    if result.ok:
        print(f"audit log intact: {result.entries} entries, head {result.head_hash}")
        return 0
    print(f"audit log TAMPERED: {result.problem} ({result.entries} entries)", file=sys.stderr)
    return 1


def add_commands(sub) -> None:
    serve = sub.add_parser("serve", help="serve the deployed Bento on 127.0.0.1 (blue/green)")
    serve.add_argument("--data-dir")
    serve.add_argument("--port", type=int, default=3001)
    serve.add_argument("--slot-ports", type=int, nargs=2, metavar=("BLUE", "GREEN"))
    serve.set_defaults(func=cmd_serve)

    package = sub.add_parser("package", help="build the Bento of a model version and deploy it")
    package.add_argument("--spec")
    package.add_argument("--data-dir")
    package.add_argument("--version", help="model version (default: the champion)")
    package.add_argument("--reason", default="manual deploy")
    package.set_defaults(func=cmd_package)

    back = sub.add_parser("rollback", help="make the previous model the champion and serve it")
    back.add_argument("--spec")
    back.add_argument("--data-dir")
    back.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for the server to switch"
    )
    back.add_argument("--to", help="the version to roll back to (idempotent: no-op if champion)")
    back.set_defaults(func=cmd_rollback)

    token = sub.add_parser("token", help="make an API token (printed once) and its hashed line")
    token.add_argument("--caller", required=True)
    token.add_argument("--role", choices=["scorer", "admin"], default="scorer")
    token.add_argument("--file", help="append the hashed line to this token file")
    token.set_defaults(func=cmd_token)

    audit_parser = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit_parser.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain; exit 1 if tampered")
    verify.add_argument("--data-dir")
    verify.set_defaults(func=cmd_audit_verify)

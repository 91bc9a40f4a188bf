"""`lending-pipeline` commands for serving: serve, package, approve, rollback, challenger, token,
audit verify and setup-postgres."""

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
    from lending_pipeline.ml.audit import AuditKeyError
    from lending_pipeline.ml.pii import PiiKeyError
    from lending_pipeline.serving.auth import TokenConfigError
    from lending_pipeline.serving.deploy import SLOTS, serve
    from lending_pipeline.serving.proxy import ProxyError

    slots = dict(zip(SLOTS, args.slot_ports, strict=True)) if args.slot_ports else None
    try:
        serve(_data_dir(args), args.port, slots)
    except (RuntimeError, ProxyError, TokenConfigError, PiiKeyError, AuditKeyError) as exc:
        print(f"serve refused: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_serve_products(args) -> int:
    from lending_pipeline.products import load_products
    from lending_pipeline.serving.proxy import ProxyError
    from lending_pipeline.serving.router import serve_products

    products = load_products()
    if products is None:
        print("serve-products needs a products file: set LENDING_PRODUCTS", file=sys.stderr)
        return 2
    try:
        return serve_products(products, args.port, products.data_root / "_router", args.first_port)
    except ProxyError as exc:
        print(f"serve-products refused: {exc}", file=sys.stderr)
        return 1


def cmd_package(args) -> int:
    """Exit 0: deployed; 1: refused (a gate, the approval, or a failed fairness gate); 2: a
    `--force` without a reason or without an admin token."""
    from lending_pipeline.ml import promotion, tracking
    from lending_pipeline.serving.auth import ADMIN_TOKEN_ENV, TokenConfigError, admin_identity
    from lending_pipeline.serving.operations import deploy_version

    spec, data_dir, config, _ = _registry(args)
    version = args.version or tracking.alias_version(config, tracking.CHAMPION)
    if version is None:
        print("no champion model yet: run `make demo` or `lending-pipeline train`", file=sys.stderr)
        return 1
    force = None
    if args.force:
        if not (args.reason or "").strip():
            print("package --force: say why with --reason TEXT (audited)", file=sys.stderr)
            return 2
        try:
            force = promotion.Force(admin_identity(os.environ.get(ADMIN_TOKEN_ENV)), args.reason)
        except TokenConfigError as exc:
            print(f"package --force refused: {exc}", file=sys.stderr)
            return 2
    try:
        bundle = deploy_version(
            spec, config, version, data_dir, reason=args.reason or "manual deploy", force=force
        )
    except promotion.PromotionRefused as exc:
        print(f"package refused: {exc}", file=sys.stderr)
        return 1
    forced = " (FORCED past the gates: audited)" if force else ""
    print(f"bento {bundle.bento_tag} (model version {version}) is the desired deployment{forced}")
    return 0


def cmd_approve(args) -> int:
    """A person's sign-off of a version waiting for approval; exit 1 when refused."""
    from lending_pipeline.ml import promotion

    _, data_dir, config, history = _registry(args)
    try:
        done = promotion.approve_version(
            config, history, data_dir, args.version, args.by, args.reason, channel="cli"
        )
    except promotion.PromotionRefused as exc:
        print(f"approve refused: {exc}", file=sys.stderr)
        return 1
    print(
        f"version {args.version} approved by {done['by']} (audit entry {done['audit_seq']}); "
        f"champion is now {args.version} (was {done['previous_version'] or 'none'}). "
        "`lending-pipeline package` deploys it."
    )
    return 0


def cmd_rollback(args) -> int:
    from lending_pipeline.serving.deploy import gave_up, read_record
    from lending_pipeline.serving.operations import RollbackError, active_version, rollback

    spec, data_dir, config, history = _registry(args)
    seen = len(read_record(data_dir)["history"])
    try:
        done = rollback(spec, config, history, data_dir, to_version=args.to)
    except RollbackError as exc:
        print(f"rollback refused: {exc}", file=sys.stderr)
        return 1
    if done.get("noop"):
        print(f"version {done['to_version']} is already the champion and served: nothing to do")
        return 0
    if done["event"] == "redeploy":
        print(
            f"version {done['to_version']} is the champion but version "
            f"{done['from_version'] or 'none'} is served; bento {done['bento_tag']} requested again"
        )
    else:
        print(
            f"champion is now version {done['to_version']} (was {done['from_version']}); "
            f"bento {done['bento_tag']} requested"
        )
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        if active_version(data_dir) == done["to_version"]:
            print(f"serving version {done['to_version']}")
            return 0
        outcome = gave_up(read_record(data_dir)["history"][seen:], bento_tag=done["bento_tag"])
        if outcome is not None:
            print(f"the deploy {outcome['event']}: {outcome['problem']}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    if args.wait:
        last = read_record(data_dir)["history"][-1]
        print(f"the server has not switched yet (last event: {last['event']})", file=sys.stderr)
        return 1
    print("`make serve` switches to it when running")
    return 0


def cmd_challenger(args) -> int:
    import getpass

    from lending_pipeline.ml import tracking
    from lending_pipeline.serving.operations import RollbackError, set_challenger

    spec, data_dir, config, history = _registry(args)
    if args.action == "show":
        shown = tracking.alias_version(config, tracking.CHALLENGER)
        state = "on" if spec.scoring.shadow else "off in the spec (scoring.shadow: false)"
        print(f"challenger: {shown or 'none'}; shadow scoring {state}")
        return 0
    if not (args.reason or "").strip():
        print("challenger refused: say why with --reason", file=sys.stderr)
        return 1
    if args.action == "set" and not args.version:
        print("challenger refused: name the version: challenger set VERSION", file=sys.stderr)
        return 1
    version = args.version if args.action == "set" else None
    actor = os.environ.get("USER") or getpass.getuser()
    try:
        bundle = set_challenger(spec, config, history, data_dir, version, actor, args.reason)
    except RollbackError as exc:
        print(f"challenger refused: {exc}", file=sys.stderr)
        return 1
    print(f"challenger: {version or 'none'} (recorded in the audit log)")
    if bundle is not None:
        print(
            f"bento {bundle.bento_tag} (champion {bundle.model_version}) is the desired deployment"
        )
    return 0


def cmd_token(args) -> int:
    from lending_pipeline.products import PRODUCT_ENV
    from lending_pipeline.serving.auth import TOKENS_FILE_ENV, new_token

    token, line = new_token(args.caller, args.role)
    file = args.file or (os.environ.get(PRODUCT_ENV) and os.environ.get(TOKENS_FILE_ENV))
    if file:
        path = Path(file)
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
    """Exit 0: intact; 1: tampered (the finding and its first bad position); 2: cannot be
    checked (no key, a missing, unreadable or empty store, no table, no head checkpoints)."""
    from lending_pipeline.ml import audit

    try:
        result = audit.verify_store(
            _data_dir(args),
            args.url,
            checkpoints=Path(args.checkpoints) if args.checkpoints else None,
            use_checkpoints=not args.no_checkpoints,
        )
    except (audit.AuditKeyError, audit.AuditStoreError, ValueError) as exc:
        print(f"audit verify: cannot check: {exc}", file=sys.stderr)
        return 2
    if not result.ok:
        where = "" if result.first_bad is None else f" at entry {result.first_bad}"
        print(
            f"audit log TAMPERED ({result.finding}{where}): {result.problem} "
            f"({result.entries} entries)",
            file=sys.stderr,
        )
        return 1
    print(f"audit log intact: {result.entries} entries, head MAC {result.head_mac}")
    if args.no_checkpoints:
        print(
            "not checked against head checkpoints: the deletion of the newest entries and a "
            "rewrite by a key holder would go unnoticed"
        )
    else:
        print(
            f"{result.checkpoints} head checkpoints agree; the newest covers entry "
            f"{result.anchored_to} ({result.unanchored} newer entries not yet checkpointed)"
        )
    for note in result.notes:
        print(note)
    return 0


def cmd_audit_decision(args) -> int:
    """The decision of record of one request: the model's, and every override since."""
    import json

    from lending_pipeline.ml import audit, data_keys

    try:
        reader = audit.open_reader(_data_dir(args), args.url)
        sealed = data_keys.open_inputs_reader(_data_dir(args))
        try:
            entries = reader.request_entries(args.id)
            found = audit.decision_of_record(
                audit.audit_key(), entries, lambda p: sealed.inputs(p) or sealed.why(p)
            )
        finally:
            sealed.close()
            reader.close()
    except (audit.AuditKeyError, audit.AuditStoreError, data_keys.DataKeyError) as exc:
        print(f"audit decision: {exc}", file=sys.stderr)
        return 2
    if found is None:
        print(f"no decision with request id {args.id!r} in the audit log", file=sys.stderr)
        return 1
    print(json.dumps(found, indent=2, sort_keys=True))
    return 0


def cmd_kill_switch(args) -> int:
    from lending_pipeline.ml.audit import AuditKeyError, AuditStoreError, AuditUnavailable
    from lending_pipeline.serving.controls import read_switch, set_switch

    data_dir = _data_dir(args)
    if args.action == "status":
        state = read_switch(data_dir)
        engaged = "ENGAGED" if state["engaged"] else "lifted"
        detail = (
            f" by {state['by']} since {state['since']}: {state['reason']}" if "by" in state else ""
        )
        print(f"kill switch {engaged}{detail}")
        return 0
    if not args.reason:
        print("say why: --reason TEXT", file=sys.stderr)
        return 2
    actor = os.environ.get("USER") or "cli"
    try:
        state = set_switch(data_dir, args.action == "engage", args.reason, f"{actor} (CLI)")
    except (AuditKeyError, AuditStoreError, AuditUnavailable) as exc:
        print(f"kill switch not changed: {exc}", file=sys.stderr)
        return 1
    if state["engaged"]:
        print("kill switch ENGAGED: every application is referred to a person (audited)")
    else:
        print("kill switch lifted: the model decides again (audited)")
    return 0


def cmd_audit_setup_postgres(args) -> int:
    from lending_pipeline.ml import audit
    from lending_pipeline.ml.audit_pg import setup_postgres

    admin_url = args.admin_url or os.environ.get("LENDING_AUDIT_ADMIN_URL")
    if not admin_url:
        print("give --admin-url or set LENDING_AUDIT_ADMIN_URL", file=sys.stderr)
        return 2
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            print(f"{args.password_env} is not set (the writer's password)", file=sys.stderr)
            return 2
    try:
        done = setup_postgres(admin_url, args.writer_role, password, args.schema)
    except (audit.AuditStoreError, ImportError) as exc:
        print(f"audit setup-postgres refused: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"audit setup-postgres failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for line in done:
        print(line)
    print(
        f"the service writes as {args.writer_role}: "
        f"{audit.AUDIT_URL_ENV}=postgresql://{args.writer_role}:PASSWORD@HOST:PORT/DATABASE"
    )
    return 0


def add_commands(sub) -> None:
    serve = sub.add_parser("serve", help="serve the deployed Bento on 127.0.0.1 (blue/green)")
    serve.add_argument("--data-dir")
    serve.add_argument("--port", type=int, default=3001)
    serve.add_argument("--slot-ports", type=int, nargs=2, metavar=("BLUE", "GREEN"))
    serve.set_defaults(func=cmd_serve)

    several = sub.add_parser(
        "serve-products",
        help="every product of the products file behind one port: /products/<name>/score",
    )
    several.add_argument("--port", type=int, default=3001)
    several.add_argument(
        "--first-port", type=int, default=3200, help="product i's own stack: this + 10 i"
    )
    several.set_defaults(func=cmd_serve_products)

    package = sub.add_parser("package", help="build the Bento of a model version and deploy it")
    package.add_argument("--spec")
    package.add_argument("--data-dir")
    package.add_argument("--version", help="model version (default: the champion)")
    package.add_argument("--reason", help="why (required with --force; audited)")
    package.add_argument(
        "--force",
        action="store_true",
        help="emergency: deploy past failed or missing gates (needs an admin token in "
        "LENDING_ADMIN_TOKEN and --reason; never past a failed fairness gate; audited)",
    )
    package.set_defaults(func=cmd_package)

    approve = sub.add_parser(
        "approve", help="sign off a version that passed every gate and awaits approval"
    )
    approve.add_argument("version")
    approve.add_argument("--by", required=True, help="who approves (recorded)")
    approve.add_argument("--reason", required=True, help="why (recorded)")
    approve.add_argument("--spec")
    approve.add_argument("--data-dir")
    approve.set_defaults(func=cmd_approve)

    back = sub.add_parser("rollback", help="make the previous model the champion and serve it")
    back.add_argument("--spec")
    back.add_argument("--data-dir")
    back.add_argument(
        "--wait", type=float, default=0.0, help="seconds to wait for the server to switch"
    )
    back.add_argument("--to", help="the version to roll back to (idempotent: no-op if champion)")
    back.set_defaults(func=cmd_rollback)

    shadow = sub.add_parser(
        "challenger", help="name the model version scored in the champion's shadow, or clear it"
    )
    shadow.add_argument("action", choices=["set", "clear", "show"])
    shadow.add_argument("version", nargs="?", help="the model version (with `set`)")
    shadow.add_argument("--reason", help="why (required to set or clear; audited)")
    shadow.add_argument("--spec")
    shadow.add_argument("--data-dir")
    shadow.set_defaults(func=cmd_challenger)

    token = sub.add_parser("token", help="make an API token (printed once) and its hashed line")
    token.add_argument("--caller", required=True)
    token.add_argument("--role", choices=["scorer", "admin"], default="scorer")
    token.add_argument(
        "--file",
        help="append the hashed line to this token file (with --product: the product's own)",
    )
    token.set_defaults(func=cmd_token)

    audit_parser = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit_parser.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="check the MAC chain and the head checkpoints (read-only); exit 1 if tampered, "
        "2 if it cannot be checked",
    )
    verify.add_argument("--data-dir")
    verify.add_argument("--url", help="the store (default: LENDING_AUDIT_URL, else the data dir)")
    verify.add_argument(
        "--checkpoints", help="head checkpoint file (default: LENDING_AUDIT_CHECKPOINTS)"
    )
    verify.add_argument(
        "--no-checkpoints",
        action="store_true",
        help="check the MAC chain alone (truncation and a key holder's rewrite go unnoticed)",
    )
    verify.set_defaults(func=cmd_audit_verify)
    setup = audit_sub.add_parser(
        "setup-postgres",
        help="create the audit table, its append-only trigger and an insert-only writer role",
    )
    setup.add_argument(
        "--admin-url", help="an administrator's URL (default: LENDING_AUDIT_ADMIN_URL)"
    )
    setup.add_argument("--writer-role", required=True, help="the role the service logs in as")
    setup.add_argument(
        "--password-env", help="environment variable holding the writer's password (optional)"
    )
    setup.add_argument("--schema", help="schema of the table (default: the admin's current)")
    setup.set_defaults(func=cmd_audit_setup_postgres)
    decision = audit_sub.add_parser(
        "decision", help="the decision of record of a request: the model's and its overrides"
    )
    decision.add_argument("id", help="the request id a /score answer gave")
    decision.add_argument("--data-dir")
    decision.add_argument("--url", help="the store (default: LENDING_AUDIT_URL, else the data dir)")
    decision.set_defaults(func=cmd_audit_decision)

    switch = sub.add_parser(
        "kill-switch", help="suspend automated decisions (every application referred) or lift it"
    )
    switch.add_argument("action", choices=["engage", "lift", "status"])
    switch.add_argument("--reason", help="why (required to engage or lift; audited)")
    switch.add_argument("--data-dir")
    switch.set_defaults(func=cmd_kill_switch)

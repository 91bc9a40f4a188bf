"""One public port for several products: `/products/<name>/<route>` is answered by that
product's own scoring stack (`lending-pipeline --product <name> serve`: its proxy, blue/green
slots, deployment record, audit log and callers), the prefix removed on the way.

The router is HAProxy again, in front of the products' stacks; `serve_products` starts it and
one stack per product and stops them together. A product whose stack is down or was refused
answers 503 (its `/readyz` fails the router's health check); the others are not affected. An
unknown product answers 404; `GET /products` lists the products served.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from lending_pipeline.processes import stop_groups
from lending_pipeline.products import Products
from lending_pipeline.serving import proxy

FIRST_PRODUCT_PORT = 3200  # product i: public port 3200 + 10 i, its slots the next two
UNKNOWN_PRODUCT = {"error": "no such product (see GET /products)", "detail": []}


def product_ports(products: Products, first: int = FIRST_PRODUCT_PORT) -> dict[str, list[int]]:
    """Each product's public port and slot ports, by its position in the products file."""
    return {
        name: [first + 10 * i, first + 10 * i + 1, first + 10 * i + 2]
        for i, name in enumerate(products.by_name)
    }


def render_config(run_dir: Path, port: int, backends: dict[str, int], timeout: float) -> str:
    """The router's HAProxy configuration: one backend per product (its stack's public port)."""
    unknown = run_dir / "unknown_product.json"
    unknown.write_text(json.dumps(UNKNOWN_PRODUCT), "utf-8")
    index = run_dir / "products.json"
    index.write_text(json.dumps({"products": sorted(backends)}), "utf-8")
    routing, sections = [], []
    for name, backend_port in backends.items():
        routing += [
            f"    acl to_{name} path_beg /products/{name}/",
            f"    use_backend product_{name} if to_{name}",
        ]
        sections += [
            f"backend product_{name}",
            *proxy.HEALTH_CHECK,
            f"    http-request set-path %[path,regsub(^/products/{name}/,/)]",
            f"    server {name} 127.0.0.1:{backend_port} check",
        ]
    return "\n".join(
        [
            "global",
            *proxy.defaults_section(run_dir, timeout),
            "frontend products",
            f"    bind 127.0.0.1:{port}",
            "    http-request set-log-level silent",
            "    http-request return status 200 content-type application/json "
            f"file {index} if {{ path /products }}",
            *routing,
            "    default_backend no_product",
            *sections,
            "backend no_product",
            f"    http-request return status 404 content-type application/json file {unknown}",
            "",
        ]
    )


def stack_command(name: str, ports: list[int]) -> list[str]:
    public, blue, green = ports
    return [
        sys.executable, "-m", "lending_pipeline.cli", "--product", name, "serve",
        "--port", str(public), "--slot-ports", str(blue), str(green),
    ]  # fmt: skip


def serve_products(
    products: Products, port: int, run_dir: Path, first: int = FIRST_PRODUCT_PORT
) -> int:
    """Run the router and every product's stack in the foreground until SIGTERM / Ctrl-C."""
    from lending_pipeline.serving.deploy import SCORING_TIMEOUT

    haproxy = proxy.haproxy_binary()  # refuse before any product's stack is started
    run_dir.mkdir(parents=True, exist_ok=True)
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    ports = product_ports(products, first)
    config = run_dir / "router.cfg"
    backends = {name: numbers[0] for name, numbers in ports.items()}
    config.write_text(render_config(run_dir, port, backends, SCORING_TIMEOUT), "utf-8")
    children: dict[str, subprocess.Popen] = {}
    for name, numbers in ports.items():
        with (logs / f"{name}.log").open("ab") as log:
            children[name] = subprocess.Popen(
                stack_command(name, numbers), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}/products/{name}/"
        print(f"product {name}: {url} (its own stack on port {numbers[0]})")
    with (logs / "router.log").open("ab") as log:
        router = subprocess.Popen(
            [haproxy, "-db", "-f", str(config)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    print(f"router on http://127.0.0.1:{port} (logs: {logs})", flush=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    try:
        reported = set()
        while not stopping and router.poll() is None:
            for name, child in children.items():
                if child.poll() is not None and name not in reported:
                    reported.add(name)
                    print(f"product {name}: its stack stopped (exit {child.returncode}); "
                          f"see {logs / (name + '.log')}", flush=True)  # fmt: skip
            time.sleep(0.5)
        return 0 if stopping else 1
    finally:
        stop_groups([router, *children.values()], timeout=60)

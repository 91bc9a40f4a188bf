"""One Dagster code location per product of the products file (`lending_pipeline.products`).

A workspace entry loads `module_name: lending_pipeline.product_locations` with the product's
name as `attribute`; `workspace_yaml` writes those entries. Each location holds the product's
definitions under its asset-key prefix, so the products share one Dagster instance and UI
without a key, a file or a model name in common.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lending_pipeline.products import Products, load_products


@lru_cache(maxsize=16)
def _definitions(spec_path: str, data_dir: str):
    from lending_pipeline.definitions import build_definitions
    from lending_pipeline.spec import load_spec

    return build_definitions(load_spec(spec_path))


def __getattr__(name: str):
    products = load_products()
    if name.startswith("__") or products is None or name not in products.by_name:
        raise AttributeError(f"{__name__} has no product '{name}' (LENDING_PRODUCTS)")
    product = products.by_name[name]
    return _definitions(str(product.spec_path), str(product.data_dir))


def workspace_yaml(products: Products) -> str:
    """A Dagster workspace with one code location per product, named after it."""
    lines = ["load_from:"]
    for name in products.by_name:
        lines += [
            "  - python_module:",
            f"      module_name: {__name__}",
            f"      attribute: {name}",
            f"      location_name: {name}",
        ]
    return "\n".join(lines) + "\n"


def products_workspace(folder: Path) -> Path | None:
    """With a products file in force, its workspace (a code location per product) written to
    `folder`; None without one (the project's own single code location applies)."""
    products = load_products()
    if products is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "products_workspace.yaml"
    path.write_text(workspace_yaml(products), "utf-8")
    return path

"""Several products side by side: the products file (`LENDING_PRODUCTS`) names each product's
spec and where its data lives.

```yaml
data_root: data/products        # default; relative paths are relative to this file
default: consumer_loan          # default: the first product
products:
  consumer_loan: {spec: lending_pipeline/specs/consumer_loan.yaml}
  sme_loan: {spec: lending_pipeline/specs/sme_loan.yaml, data_dir: sme}
```

With a products file in force, each product has its own data dir (`<data_root>/<name>` unless
given: landing files, warehouse, MLflow store, reports, audit log, deployments, tokens), its own
audit chain (SQLite in its data dir, or its `audit_url`; never `LENDING_AUDIT_URL`), its own
asset-key prefix (its name) and its own Dagster code location; its registered model and MLflow
experiment carry its name. Without one, the spec in force (`LENDING_PIPELINE_SPEC`) is the only
product, its data in `LENDING_DATA_DIR`, its asset keys unprefixed: nothing changes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from lending_pipeline.spec import NAME, SpecError

PRODUCTS_ENV = "LENDING_PRODUCTS"


@dataclass(frozen=True)
class Product:
    name: str
    spec_path: Path
    data_dir: Path
    audit_url: str = ""  # its own PostgreSQL audit store; default: SQLite in its data dir


@dataclass(frozen=True)
class Products:
    path: Path
    default: str
    by_name: dict[str, Product]
    data_root: Path

    def get(self, name: str | None) -> Product:
        """The product called `name` (the default one when None); a clear error otherwise."""
        chosen = name or self.default
        if chosen not in self.by_name:
            known = ", ".join(sorted(self.by_name))
            raise SpecError(f"products file '{self.path}': no product '{chosen}' (known: {known})")
        return self.by_name[chosen]


def products_path() -> Path | None:
    value = os.environ.get(PRODUCTS_ENV)
    return Path(value).resolve() if value else None


def load_products(path: str | Path | None = None) -> Products | None:
    """The products file in force (`LENDING_PRODUCTS`), or None when there is none."""
    path = Path(path).resolve() if path else products_path()
    if path is None:
        return None
    return _load(str(path), path.stat().st_mtime_ns if path.exists() else 0)


@lru_cache(maxsize=8)
def _load(path_text: str, mtime: int) -> Products:
    path = Path(path_text)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"products file '{path}': cannot be read ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("products"), dict):
        raise SpecError(f"products file '{path}': needs a `products:` mapping of name to spec")
    unknown = set(data) - {"data_root", "default", "products"}
    if unknown:
        raise SpecError(f"products file '{path}': unknown fields {sorted(unknown)}")
    base = path.parent
    root = base / str(data.get("data_root") or "data/products")
    by_name = {}
    for name, entry in data["products"].items():
        where = f"products file '{path}', product '{name}'"
        if not isinstance(name, str) or not re.match(NAME, name):
            raise SpecError(f"{where}: a product name must match {NAME}")
        if not isinstance(entry, dict) or "spec" not in entry:
            raise SpecError(f"{where}: needs `spec:` (the path of its spec file)")
        extra = set(entry) - {"spec", "data_dir", "audit_url"}
        if extra:
            raise SpecError(f"{where}: unknown fields {sorted(extra)}")
        data_dir = (root / str(entry.get("data_dir") or name)).resolve()
        spec_file = (base / str(entry["spec"])).resolve()
        by_name[name] = Product(name, spec_file, data_dir, str(entry.get("audit_url") or ""))
    if not by_name:
        raise SpecError(f"products file '{path}': lists no product")
    urls = [p.audit_url for p in by_name.values() if p.audit_url]
    if len(urls) != len(set(urls)):
        raise SpecError(f"products file '{path}': two products share an audit_url (one chain each)")
    dirs = [p.data_dir for p in by_name.values()]
    for product in by_name.values():
        if dirs.count(product.data_dir) > 1:
            raise SpecError(
                f"products file '{path}': products share the data dir {product.data_dir}"
            )
    default = str(data.get("default") or next(iter(by_name)))
    if default not in by_name:
        raise SpecError(f"products file '{path}': default '{default}' is not a listed product")
    return Products(path, default, by_name, root.resolve())


def key_prefix(spec_name: str) -> list[str]:
    """The asset-key prefix of a product: its name when a products file is in force."""
    return [spec_name] if load_products() is not None else []


def product_of_data_dir(data_dir: Path | None) -> Product | None:
    """The product whose data dir this is, if a products file is in force and lists one."""
    products = load_products()
    if products is None or data_dir is None:
        return None
    resolved = Path(data_dir).resolve()
    return next((p for p in products.by_name.values() if p.data_dir == resolved), None)


def product_data_dir(spec_name: str) -> Path | None:
    """The data dir the products file gives a product, or None (no file, or not listed)."""
    products = load_products()
    if products is None or spec_name not in products.by_name:
        return None
    return products.by_name[spec_name].data_dir


PRODUCT_ENV = "LENDING_PRODUCT"


def select_product(name: str | None) -> Product | None:
    """Make one product the one in force for this process (the CLI's `--product`): its spec and
    data dir become `LENDING_PIPELINE_SPEC` and `LENDING_DATA_DIR`, its callers those of its own
    token file (`<data dir>/secrets/api_tokens`; `LENDING_API_TOKENS` is not used for a product,
    so a token of one product is never accepted by another). None without a products file."""
    products = load_products()
    if products is None:
        if name:
            raise SpecError(f"--product {name}: no products file in force (set {PRODUCTS_ENV})")
        return None
    product = products.get(name or os.environ.get(PRODUCT_ENV))
    os.environ[PRODUCT_ENV] = product.name
    os.environ["LENDING_PIPELINE_SPEC"] = str(product.spec_path)
    os.environ["LENDING_DATA_DIR"] = str(product.data_dir)
    os.environ["LENDING_API_TOKENS_FILE"] = str(tokens_path(product))
    os.environ.pop("LENDING_API_TOKENS", None)
    for name in ("LENDING_AUDIT_URL", "LENDING_AUDIT_CHECKPOINTS"):  # one chain per product
        os.environ.pop(name, None)
    if product.audit_url:
        os.environ["LENDING_AUDIT_URL"] = product.audit_url
    return product


def tokens_path(product: Product) -> Path:
    return product.data_dir / "secrets" / "api_tokens"

"""The products file: what it gives each product, and clear refusals of what it cannot hold."""

import pytest

from lending_pipeline.cli import main
from lending_pipeline.products import key_prefix, load_products, product_data_dir
from lending_pipeline.spec import SpecError
from lending_pipeline_tests.products.conftest import NAMES


def test_each_product_gets_its_spec_data_dir_and_prefix(products_file):
    products = load_products()
    assert list(products.by_name) == list(NAMES) and products.default == NAMES[0]
    for name in NAMES:
        product = products.get(name)
        assert product.spec_path == products_file.parent / "specs" / f"{name}.yaml"
        assert product.data_dir == products_file.parent / "data" / "products" / name
        assert product_data_dir(name) == product.data_dir
        assert key_prefix(name) == [name]
    assert product_data_dir("not_listed") is None


def test_without_a_products_file_nothing_is_prefixed(monkeypatch):
    monkeypatch.delenv("LENDING_PRODUCTS", raising=False)
    assert load_products() is None and key_prefix("consumer_loan") == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("products: {}", "lists no product"),
        ("products: [a]", "needs a `products:` mapping"),
        ("products: {Bad-Name: {spec: a.yaml}}", "a product name must match"),
        ("products: {a: {data_dir: x}}", "needs `spec:`"),
        ("products: {a: {spec: a.yaml, port: 1}}", "unknown fields ['port']"),
        ("products: {a: {spec: a.yaml}}\ndefault: b", "default 'b' is not a listed product"),
        ("products: {a: {spec: a.yaml, data_dir: x}, b: {spec: b.yaml, data_dir: x}}", "share"),
        ("owner: me\nproducts: {a: {spec: a.yaml}}", "unknown fields ['owner']"),
    ],
)
def test_a_products_file_it_cannot_use_is_refused_naming_it(tmp_path, text, message):
    path = tmp_path / "products.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match="products file") as refused:
        load_products(path)
    assert message in str(refused.value) and str(path) in str(refused.value)


def test_an_unknown_product_or_no_products_file_is_a_clear_cli_error(
    products_file, monkeypatch, capsys
):
    assert main(["--product", "nope", "spec"]) == 2
    assert "no product 'nope' (known: car_loan, personal_loan)" in capsys.readouterr().err
    monkeypatch.delenv("LENDING_PRODUCTS")
    assert main(["--product", NAMES[0], "spec"]) == 2
    assert "no products file in force (set LENDING_PRODUCTS)" in capsys.readouterr().err


def test_the_cli_acts_on_the_chosen_product(products_file, monkeypatch, capsys):
    import os

    for name in ("LENDING_PRODUCT", "LENDING_API_TOKENS", "LENDING_API_TOKENS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LENDING_API_TOKENS", "someone:scorer:0123")
    assert main(["--product", NAMES[1], "spec"]) == 0
    assert f"spec '{NAMES[1]}' is valid" in capsys.readouterr().out
    product = load_products().get(NAMES[1])
    assert os.environ["LENDING_DATA_DIR"] == str(product.data_dir)
    assert os.environ["LENDING_API_TOKENS_FILE"] == str(product.data_dir / "secrets/api_tokens")
    assert "LENDING_API_TOKENS" not in os.environ  # no caller valid for every product


def test_each_product_keeps_its_own_audit_chain(products_file, monkeypatch):
    from lending_pipeline.ml import audit

    monkeypatch.setenv("LENDING_AUDIT_URL", "postgresql://shared@127.0.0.1/one_chain")
    monkeypatch.setenv("LENDING_AUDIT_CHECKPOINTS", "/tmp/shared_heads.jsonl")
    first, second = (load_products().get(name) for name in NAMES)
    assert audit.configured_url(first.data_dir) == ""  # its SQLite store, not the shared one
    assert audit.checkpoints_path(first.data_dir) == first.data_dir / "audit/head_checkpoints.jsonl"
    assert audit.configured_url(products_file.parent / "elsewhere").endswith("/one_chain")
    text = products_file.read_text().replace(
        f"{NAMES[1]}.yaml", f"{NAMES[1]}.yaml\n    audit_url: postgresql://x@127.0.0.1/second"
    )
    products_file.write_text(text)
    assert audit.configured_url(second.data_dir) == "postgresql://x@127.0.0.1/second"
    shared = text.replace("\n    audit_url: postgresql://x@127.0.0.1/second", "")
    shared = shared.replace(
        f"{NAMES[0]}.yaml", f"{NAMES[0]}.yaml\n    audit_url: postgresql://x@127.0.0.1/same"
    ).replace(f"{NAMES[1]}.yaml", f"{NAMES[1]}.yaml\n    audit_url: postgresql://x@127.0.0.1/same")
    products_file.write_text(shared)
    with pytest.raises(SpecError, match="share an audit_url"):
        load_products()

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

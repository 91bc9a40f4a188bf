import hashlib
import hmac

import pyarrow as pa
import pytest

from lending_pipeline.ml.pii import PiiKeyError, is_pseudonym, key_bytes, pseudonymise

KEY = b"a-test-key-of-sufficient-length"


def test_matches_standard_hmac_sha256_and_keeps_nulls():
    values = pa.array(["123-45-6789", None, "Jane Doe", "123-45-6789"])
    out = pseudonymise(values, KEY).to_pylist()
    expected = "p_" + hmac.new(KEY, b"123-45-6789", hashlib.sha256).hexdigest()[:32]
    assert out[0] == expected == out[3]
    assert out[1] is None
    assert is_pseudonym(out[2]) and out[2] != out[0]


def test_long_keys_are_hashed_like_hmac():
    key = b"k" * 100
    out = pseudonymise(pa.array(["x"]), key).to_pylist()[0]
    assert out == "p_" + hmac.new(key, b"x", hashlib.sha256).hexdigest()[:32]


def test_another_key_gives_other_pseudonyms():
    values = pa.array(["jane@example.com"])
    assert pseudonymise(values, KEY).to_pylist() != pseudonymise(values, KEY + b"2").to_pylist()


def test_key_validation_never_echoes_the_key():
    with pytest.raises(PiiKeyError, match="not set"):
        key_bytes(None)
    with pytest.raises(PiiKeyError) as error:
        key_bytes("short-secret")
    assert "short-secret" not in str(error.value)

"""Pseudonymisation of personal data with a keyed HMAC.

Each PII value is replaced by HMAC-SHA256(key, value), truncated to 128 bits and hex-encoded
with a `p_` prefix. The same person gets the same pseudonym under the same key (so records can
still be linked), and without the key the value cannot be recovered or guessed by hashing
candidates. The key comes from the environment (`LENDING_PII_KEY`); it is never logged. Several
keys with ids, and their rotation, are in `keyring` (pseudonyms of later key generations are
written `p<n>_`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

MIN_KEY_LENGTH = 16
PREFIX = "p_"


class PiiKeyError(ValueError):
    """The pseudonymisation key is missing or too short."""


def key_bytes(key: str | None) -> bytes:
    """Validate the key text and return it as bytes (never echoing it)."""
    if not key:
        raise PiiKeyError(
            "LENDING_PII_KEY is not set: set a random secret of at least "
            f"{MIN_KEY_LENGTH} characters (make demo creates a local one)"
        )
    if len(key) < MIN_KEY_LENGTH:
        raise PiiKeyError(f"LENDING_PII_KEY is too short: use at least {MIN_KEY_LENGTH} characters")
    return key.encode("utf-8")


def pseudonymise(values: pa.Array | pa.ChunkedArray, key: bytes | Callable[[str], str]) -> pa.Array:
    """Replace every non-null value by its keyed pseudonym (under `key`, or by the function
    given, e.g. a keyring's `pseudonymise`); nulls stay null.

    Values are dictionary-encoded first, so each distinct value is hashed once.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
    values = values.cast(pa.string())
    encoded = values.dictionary_encode()
    one = Pseudonymiser(key) if isinstance(key, bytes) else key
    hashed = pa.array([one(v) for v in encoded.dictionary.to_pylist()], pa.string())
    return pc.take(hashed, encoded.indices)


class Pseudonymiser:
    """Keyed pseudonyms of single values, from precomputed HMAC pad states.

    HMAC-SHA256(key, text) = H((key ^ opad) || H((key ^ ipad) || text)): the same value as
    `hmac.new(key, text, "sha256")`, without re-deriving the pads for every value.
    """

    def __init__(self, key: bytes):
        self._inner, self._outer = _hmac_states(key)

    def digest(self, data: bytes) -> str:
        """Hex HMAC-SHA256 of `data`."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def __call__(self, text: str) -> str:
        return PREFIX + self.digest(text.encode("utf-8"))[:32]


def _hmac_states(key: bytes):
    block = hashlib.sha256().block_size
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    return inner, outer


_PSEUDONYM = re.compile(r"p(?:[1-9][0-9]*)?_[0-9a-f]{32}")


def is_pseudonym(text: str) -> bool:
    """Whether the text is a pseudonym of any key generation (`p_...`, `p2_...`)."""
    return _PSEUDONYM.fullmatch(text) is not None

"""Pseudonymisation keys with ids and generations: rotation without the raw values.

A keyring is an ordered list of keys; the *active* one pseudonymises new data. Pseudonyms are
layered: generation 0 is `p_` + HMAC(k0, value) (the single-key format of `pii`), generation n
is `p<n>_` + HMAC(kn, pseudonym of generation n - 1), each truncated to 128 bits. Each pseudonym
says its generation in its prefix, so a pseudonym of an older generation is lifted to the active
one with the newer keys alone (`Keyring.rekey`), and the re-keying job turns the warehouse into
exactly what ingesting it under the active key would have written: joins across a rotation keep
working, and no raw value is needed. Who holds only an older key (a leaked one) cannot compute
pseudonyms of the active generation.

Sources: `LENDING_PII_KEYRING` names a JSON file listing the keys (their secrets come from
environment variables or files it names, never from the file itself) and the active id;
without it, `LENDING_PII_KEY` alone is a keyring of one key, whose id is its fingerprint.
Errors never show a secret.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lending_pipeline.ml.pii import PREFIX, PiiKeyError, Pseudonymiser, key_bytes

KEYRING_ENV = "LENDING_PII_KEYRING"
PII_KEY_ENV = "LENDING_PII_KEY"
DIGITS = 32
_PSEUDONYM = re.compile(r"p(\d*)_([0-9a-f]{32})")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class KeyringError(PiiKeyError):
    """The keyring file or one of its keys is missing, unreadable or inconsistent."""


def fingerprint(secret: bytes) -> str:
    """A key's default id: a keyed hash of a fixed text (shows nothing of the key)."""
    return "pk-" + Pseudonymiser(secret).digest(b"lending-pii-key-id")[:12]


def prefix(generation: int) -> str:
    return PREFIX if generation == 0 else f"p{generation}_"


def generation_of(text: str) -> int | None:
    """The generation a pseudonym was made under, or None when the text is not a pseudonym."""
    found = _PSEUDONYM.fullmatch(text)
    if not found:
        return None
    digits = found.group(1)
    if digits.startswith("0"):  # generation 0 is written `p_`
        return None
    return int(digits) if digits else 0


@dataclass(frozen=True)
class PiiKey:
    id: str
    generation: int
    layer: Pseudonymiser = field(repr=False)
    secret: bytes = field(repr=False)


class ChainPseudonymiser:
    """Pseudonyms of the generation of the last key given (`__call__`); `digest` is the HMAC
    under that key alone (for keyed hashes that are not pseudonyms, e.g. of a whole request)."""

    def __init__(self, keys: list[PiiKey]):
        self.keys = keys
        self.digest = keys[-1].layer.digest

    def __call__(self, text: str) -> str:
        keys = self.keys
        value = PREFIX + keys[0].layer.digest(text.encode("utf-8"))[:DIGITS]
        for key in keys[1:]:
            value = prefix(key.generation) + key.layer.digest(value.encode())[:DIGITS]
        return value


class Keyring:
    """Keys in generation order and the active one (see the module's docstring)."""

    def __init__(self, secrets: list[tuple[str, bytes]], active: str | None = None):
        if not secrets:
            raise KeyringError("the keyring holds no key")
        ids = [key_id for key_id, _ in secrets]
        if len(set(ids)) != len(ids):
            raise KeyringError("the keyring lists a key id twice")
        if len({secret for _, secret in secrets}) != len(secrets):
            raise KeyringError("the keyring lists the same secret under two ids")
        self.keys = [PiiKey(i, g, Pseudonymiser(s), s) for g, (i, s) in enumerate(secrets)]
        active = ids[-1] if active is None else active
        if active not in ids:
            raise KeyringError(f"the active key id {active!r} is not in the keyring")
        self.active = self.keys[ids.index(active)]
        self.pseudonymise = ChainPseudonymiser(self.keys[: self.active.generation + 1])

    @property
    def active_id(self) -> str:
        return self.active.id

    def by_id(self, key_id: str) -> PiiKey:
        for key in self.keys:
            if key.id == key_id:
                return key
        raise KeyringError(f"no key {key_id!r} in the keyring")

    def rekey(self, pseudonym: str) -> str:
        """The pseudonym lifted to the active generation (unchanged when it is there already).
        Raises ValueError for text that is not a pseudonym or is newer than the active key."""
        generation = generation_of(pseudonym)
        if generation is None:
            raise ValueError("not a pseudonym")
        if generation > self.active.generation:
            raise ValueError(
                f"a pseudonym of generation {generation}, newer than the active key "
                f"{self.active.id} (generation {self.active.generation})"
            )
        value = pseudonym
        for key in self.keys[generation + 1 : self.active.generation + 1]:
            value = prefix(key.generation) + key.layer.digest(value.encode())[:DIGITS]
        return value

    def describe(self) -> list[dict]:
        """Ids and generations (no secrets), for operators."""
        return [
            {"id": k.id, "generation": k.generation, "active": k is self.active} for k in self.keys
        ]


def load(environ=None, pii_key: str | None = None) -> Keyring:
    """The keyring of `LENDING_PII_KEYRING`, else of `LENDING_PII_KEY` (or `pii_key`) alone."""
    env = os.environ if environ is None else environ
    named = env.get(KEYRING_ENV)
    if named:
        return from_file(Path(named), env)
    secret = key_bytes(pii_key if pii_key is not None else env.get(PII_KEY_ENV))
    return Keyring([(fingerprint(secret), secret)])


def from_file(path: Path, environ=None) -> Keyring:
    """A keyring file: `{"active": ID, "keys": [{"id": ID, "secret_env": NAME} or
    {"secret_file": PATH}, ...]}` in generation order; a key without `id` gets its fingerprint."""
    env = os.environ if environ is None else environ
    where = f"{KEYRING_ENV} ({path})"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeyringError(f"{where} cannot be read: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyringError(f"{where} is not JSON: {type(exc).__name__}") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        raise KeyringError(f'{where}: expected {{"active": ID, "keys": [...]}} with keys')
    secrets = []
    for position, item in enumerate(keys):
        label = f"{where}: keys[{position}]"
        if not isinstance(item, dict) or set(item) - {"id", "secret_env", "secret_file"}:
            raise KeyringError(f"{label}: expected id and one of secret_env, secret_file")
        if len(item.keys() & {"secret_env", "secret_file"}) != 1:
            raise KeyringError(f"{label}: give exactly one of secret_env, secret_file")
        if "secret_env" in item:
            text = env.get(item["secret_env"])
            source = f"environment variable {item['secret_env']}"
        else:
            try:
                text = Path(item["secret_file"]).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise KeyringError(f"{label}: secret_file cannot be read: {reason}") from None
            source = f"file {item['secret_file']}"
        try:
            secret = key_bytes(text)
        except PiiKeyError as exc:
            problem = str(exc).replace(PII_KEY_ENV, source)
            raise KeyringError(f"{label}: {problem}") from None
        key_id = item.get("id") or fingerprint(secret)
        if not isinstance(key_id, str) or not _ID.fullmatch(key_id):
            raise KeyringError(f"{label}: id must be letters, digits, '.', '_' or '-' (64 at most)")
        secrets.append((key_id, secret))
    active = document.get("active")
    if active is not None and not isinstance(active, str):
        raise KeyringError(f"{where}: active must be a key id")
    try:
        return Keyring(secrets, active)
    except KeyringError as exc:
        raise KeyringError(f"{where}: {exc}") from None

"""Secrets of the production profile from a Vault-API secret store (OpenBao, Vault): one KV v2
secret holding the PII key, the audit key and the API token hashes, read through `hvac`.

`lending-pipeline up` reads them when `LENDING_SECRETS_URL` is set and hands them to its
processes in their environment (in memory only); the embedded profile keeps environment
variables and files. Errors name the store, the path and the missing keys, never a value.
"""

from __future__ import annotations

import os

SECRETS_URL_ENV = "LENDING_SECRETS_URL"
SECRETS_TOKEN_ENV = "LENDING_SECRETS_TOKEN"
SECRETS_MOUNT_ENV = "LENDING_SECRETS_MOUNT"
SECRETS_PATH_ENV = "LENDING_SECRETS_PATH"
# key in the store -> environment variable the pipeline and the scoring service read
KEYS = {
    "pii_key": "LENDING_PII_KEY",
    "audit_key": "LENDING_AUDIT_KEY",
    "api_tokens": "LENDING_API_TOKENS",
}
REQUIRED = ("pii_key", "audit_key")


class SecretStoreError(RuntimeError):
    """The secret store is unreachable, sealed, refuses the token or lacks a secret."""


def configured() -> bool:
    return bool(os.environ.get(SECRETS_URL_ENV))


def read_secrets(
    url: str | None = None,
    token: str | None = None,
    mount: str | None = None,
    path: str | None = None,
    timeout: float = 5,
) -> dict[str, str]:
    """The secrets as environment variables (`KEYS`), read from the store."""
    import hvac
    import requests

    url = url or os.environ.get(SECRETS_URL_ENV) or ""
    token = token or os.environ.get(SECRETS_TOKEN_ENV) or os.environ.get("VAULT_TOKEN") or ""
    mount = mount or os.environ.get(SECRETS_MOUNT_ENV) or "secret"
    path = path or os.environ.get(SECRETS_PATH_ENV) or "lending"
    where = f"{url} ({mount}/{path})"
    if not url:
        raise SecretStoreError(f"no secret store: set {SECRETS_URL_ENV}")
    if not token:
        raise SecretStoreError(f"no token for the secret store {url}: set {SECRETS_TOKEN_ENV}")
    client = hvac.Client(url=url, token=token, timeout=timeout)
    try:
        if client.sys.is_sealed():
            raise SecretStoreError(f"the secret store {url} is sealed: unseal it first")
        answer = client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True
        )
    except requests.exceptions.RequestException as exc:
        raise SecretStoreError(
            f"the secret store {url} is unreachable: {type(exc).__name__}"
        ) from None
    except hvac.exceptions.Forbidden:
        raise SecretStoreError(f"the secret store {url} refused the token") from None
    except hvac.exceptions.InvalidPath:
        raise SecretStoreError(f"no secret at {where}") from None
    except hvac.exceptions.VaultError as exc:
        raise SecretStoreError(f"the secret store {where} failed: {type(exc).__name__}") from None
    data = answer["data"]["data"] or {}
    missing = [key for key in REQUIRED if not data.get(key)]
    if missing:
        raise SecretStoreError(f"the secret at {where} lacks {', '.join(missing)}")
    return {env: str(data[key]) for key, env in KEYS.items() if data.get(key)}


def write_secrets(client, values: dict[str, str], mount: str = "secret", path: str = "lending"):
    """Store the secrets (keys of `KEYS`) as one KV v2 secret; for setup and tests."""
    unknown = set(values) - set(KEYS)
    if unknown:
        raise ValueError(f"unknown secret keys: {', '.join(sorted(unknown))}")
    client.secrets.kv.v2.create_or_update_secret(path=path, secret=values, mount_point=mount)

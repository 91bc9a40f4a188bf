"""Faults of the serving stack, for real: killed processes under load, a rollback under keep-alive
load, the audit database restarted under load, the deployment record. The stack here writes its
audit log to PostgreSQL (a private cluster this module starts), as the insert-only role. Each
test measures what clients saw and checks that every answered decision is in the audit log."""

import contextlib
import os
import signal
import socket
import time
from collections import Counter

import httpx
import psutil
import pytest

from lending_pipeline.ml import audit, tracking
from lending_pipeline.ml.audit_pg import setup_postgres
from lending_pipeline.serving.deploy import read_record, record_path
from lending_pipeline.serving.supervision import Supervision
from lending_pipeline_tests.postgres import Cluster
from lending_pipeline_tests.serving.conftest import Load, deploy, wait_for


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    cluster = Cluster()
    try:
        name = cluster.new_database()
        setup_postgres(cluster.url(name), "scoring_writer", "writer-password-for-tests")
        cluster.writer_url = cluster.url(name, "scoring_writer", "writer-password-for-tests")
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, database):
    yield from deploy(tmp_path_factory.mktemp("faults"), audit_url=database.writer_url)


def audited_ids(deployment) -> set[str]:
    store = audit.open_reader(deployment.data_dir)
    try:
        return {e.data["request_id"] for e in store.entries() if e.kind == "decision"}
    finally:
        store.close()


def assert_answers_audited(deployment, load: Load) -> None:
    answered = {a.request_id for a in load.answers if a.status == 200}
    assert answered, "no request was answered"
    assert answered <= audited_ids(deployment)


def processes(deployment, slot: str) -> tuple[int, list[int]]:
    """The pid of a slot's server and of its live workers."""
    server = Supervision(deployment.data_dir).pid(slot)
    children = psutil.Process(server).children(recursive=True)
    return server, [c.pid for c in children if c.status() != psutil.STATUS_ZOMBIE]


def gone(pids: list[int]) -> bool:
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


def ready(port: int) -> int:
    with httpx.Client(timeout=5) as client:
        return client.get(f"http://127.0.0.1:{port}/readyz").status_code


def test_the_deployment_record_names_the_ports_in_use(deployment):
    active = read_record(deployment.data_dir)["active"]
    assert active["port"] == deployment.slots[active["slot"]]
    assert active["proxy_port"] == int(deployment.url.rsplit(":", 1)[1])
    switched = [e for e in read_record(deployment.data_dir)["history"] if e["event"] == "switched"]
    assert switched[-1]["port"] == active["port"]


def test_concurrent_clients_every_answered_decision_has_one_entry_and_the_chain_verifies(
    deployment,
):
    """Four clients at once, 50 requests each on a connection of its own, answered by the
    active slot's two workers appending to one chain in PostgreSQL: every answered decision has
    exactly one entry, and `lending-pipeline audit verify` (chain and head checkpoints) passes."""
    loads = [Load(deployment, limit=50, pause=0) for _ in range(4)]
    with contextlib.ExitStack() as running:
        for load in loads:
            running.enter_context(load)
        wait_for(lambda: all(len(load.answers) == 50 for load in loads), 300, "200 answers")
    answers = [a for load in loads for a in load.answers]
    assert {a.status for a in answers} == {200}, {(a.status, a.error) for a in answers}
    assert max(load.answers[0].sent for load in loads) < min(
        load.answers[-1].sent for load in loads
    )
    answered = [a.request_id for a in answers]
    assert len(set(answered)) == len(answered) == 200
    store = audit.open_reader(deployment.data_dir)
    try:
        entries = Counter(e.data["request_id"] for e in store.entries() if e.kind == "decision")
    finally:
        store.close()
    assert {request_id: entries[request_id] for request_id in answered} == dict.fromkeys(
        answered, 1
    )
    heads = audit.checkpoints_path(deployment.data_dir)  # written every 10 s by the service
    answered_at = time.time()
    wait_for(
        lambda: heads.exists() and heads.stat().st_mtime > answered_at, 90, "a head checkpoint"
    )
    verified = deployment.cli("audit", "verify", "--data-dir", str(deployment.data_dir))
    assert verified.returncode == 0, verified.stderr
    assert "audit log intact" in verified.stdout


def test_a_rollback_reaches_a_kept_alive_client_on_its_next_request(deployment):
    with Load(deployment) as load:
        load.wait_answers(20)
        done = deployment.cli("rollback", "--wait", "240")
        switched = time.monotonic()
        assert done.returncode == 0, done.stderr + deployment.logs()
        load.wait_answers(30)
    assert len({a.client_port for a in load.answers}) == 1  # one kept-alive connection
    assert {a.status for a in load.answers} == {200}, {(a.status, a.error) for a in load.answers}
    assert load.answers[0].version == "2"
    after = {a.version for a in load.answers if a.sent > switched}
    assert after == {"1"}
    assert_answers_audited(deployment, load)


def test_a_rollback_whose_slot_cannot_start_fails_loudly_and_a_retry_deploys_it(deployment):
    """The idle slot stopped and its port taken by another process: the rollback's deploy
    fails, `rollback --wait` says why at once, the served version stays; once the port is free,
    `rollback --to` the (new) champion requests its deploy again and it is served."""
    record = read_record(deployment.data_dir)
    served = record["active"]["model_version"]
    idle = next(name for name in deployment.slots if name != record["active"]["slot"])
    Supervision(deployment.data_dir).stop(idle)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        squatter.bind(("127.0.0.1", deployment.slots[idle]))
        squatter.listen()
        started = time.monotonic()
        failed = deployment.cli("rollback", "--wait", "240")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert time.monotonic() - started < 200  # said when it failed, not at the deadline
    assert f"port {deployment.slots[idle]} is already in use" in failed.stderr, failed.stderr
    assert deployment.served_version() == served
    champion = tracking.alias_version(deployment.config, tracking.CHAMPION)
    assert champion != served
    retried = deployment.cli("rollback", "--to", champion, "--wait", "240")
    assert retried.returncode == 0, retried.stderr + deployment.logs()
    assert "requested again" in retried.stdout
    assert deployment.served_version() == champion
    again = deployment.cli("rollback", "--to", champion)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout


def test_a_killed_worker_is_replaced_while_the_other_answers(deployment):
    slot = read_record(deployment.data_dir)["active"]["slot"]
    server, workers = processes(deployment, slot)
    assert len(workers) == 2
    with Load(deployment) as load:
        load.wait_answers(20)
        os.kill(workers[0], signal.SIGKILL)

        def replaced() -> bool:
            live = processes(deployment, slot)[1]
            return len(live) == 2 and workers[0] not in live

        wait_for(replaced, 120, "a new worker")
        load.wait_answers(30)
    failed = [a for a in load.answers if a.status != 200]
    assert len(failed) <= 1, failed  # at most the request in flight on the killed worker
    assert processes(deployment, slot)[0] == server
    assert_answers_audited(deployment, load)


def test_a_killed_server_restarts_on_its_slot_leaving_no_orphan_twice(deployment):
    """SIGKILL of the active slot's server, twice: each time the process manager restarts it on
    the same slot with the same Bento, its workers die with it, the other slot (the rollback
    target) keeps running untouched, and service resumes."""
    before = read_record(deployment.data_dir)["active"]
    other = next(name for name in deployment.slots if name != before["slot"])
    warm = Supervision(deployment.data_dir).pid(other)
    outages = []
    for _ in range(2):
        server, workers = processes(deployment, before["slot"])
        killed_pids = [server, *workers]
        with Load(deployment) as load:
            load.wait_answers(20)
            os.kill(server, signal.SIGKILL)
            killed = time.monotonic()
            outages.append(load.wait_recovered(killed, timeout=240))
            load.wait_answers(20)
        wait_for(lambda: gone(killed_pids), 60, "the killed server's workers to exit")  # noqa: B023
        failed = [a for a in load.answers if a.status != 200]
        assert all(killed - 1 <= a.sent < killed + outages[-1] for a in failed), failed
        assert_answers_audited(deployment, load)
        assert {a.version for a in load.answers if a.status == 200} == {before["model_version"]}
    after = read_record(deployment.data_dir)["active"]
    assert (after["slot"], after["bento_tag"]) == (before["slot"], before["bento_tag"])
    assert Supervision(deployment.data_dir).pid(other) == warm and ready(deployment.slots[other])
    restarts = [e for e in read_record(deployment.data_dir)["history"] if e["event"] == "restarted"]
    assert len(restarts) >= 2
    print(f"outage after SIGKILL of the server: {', '.join(f'{s:.1f} s' for s in outages)}")


def test_a_killed_proxy_comes_back_routing_to_the_same_slot(deployment):
    version = read_record(deployment.data_dir)["active"]["model_version"]
    proxy = Supervision(deployment.data_dir).pid("proxy")
    with Load(deployment) as load:
        load.wait_answers(20)
        os.kill(proxy, signal.SIGKILL)
        killed = time.monotonic()
        outage = load.wait_recovered(killed, timeout=120)
        load.wait_answers(20)
    assert Supervision(deployment.data_dir).pid("proxy") not in (0, proxy)
    assert {a.version for a in load.answers if a.status == 200} == {version}
    assert_answers_audited(deployment, load)
    print(f"outage after SIGKILL of the proxy: {outage:.2f} s")


def test_a_killed_deployer_is_restarted_and_deploys_again(deployment):
    deployer = Supervision(deployment.data_dir).pid("deployer")
    os.kill(deployer, signal.SIGKILL)
    wait_for(
        lambda: Supervision(deployment.data_dir).pid("deployer") not in (0, deployer),
        60,
        "the deployer to be restarted",
    )
    current = read_record(deployment.data_dir)["active"]["model_version"]
    target = "2" if current == "1" else "1"
    done = deployment.cli("rollback", "--to", target, "--wait", "240")
    assert done.returncode == 0, done.stderr + deployment.logs()
    assert deployment.served_version() == target


def test_a_hand_edited_deploy_request_deploys_nothing(deployment):
    import datetime as dt
    import json

    record = read_record(deployment.data_dir)
    served = record["active"]["model_version"]
    other = next(
        (h for h in record["history"] if h.get("bento_tag") and h["model_version"] != served),
        {"bento_tag": "lending_scoring:never_gated", "model_version": "99"},
    )
    forged = {
        **record["desired"],  # the last genuine request, its MAC with it
        "bento_tag": other["bento_tag"],
        "model_version": other["model_version"],
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    record["desired"] = forged
    path = record_path(deployment.data_dir)
    path.write_text(json.dumps(record, indent=2), "utf-8")

    seen = len(record["history"])

    def refused():
        history = read_record(deployment.data_dir)["history"][seen:]
        return [h for h in history if h["event"] == "refused"]

    (entry,) = wait_for(refused, 60, "the deployer to refuse the edited request")
    assert "does not verify" in entry["problem"] and entry["bento_tag"] == other["bento_tag"]
    assert read_record(deployment.data_dir)["active"]["model_version"] == served
    assert deployment.served_version() == served
    done = deployment.cli("rollback", "--to", other["model_version"], "--wait", "240")
    if other["model_version"] != "99":  # a genuine command still deploys (its gates checked)
        assert done.returncode == 0, done.stderr
        assert deployment.served_version() == other["model_version"]


def test_the_audit_database_restarted_under_load_needs_no_human(deployment, database):
    """While PostgreSQL is down no decision is answered (503) and /readyz turns 503 on the
    active slot; once it is back the service answers again by itself, and every answered
    decision has its entry in a chain that verifies."""
    port = deployment.slots[read_record(deployment.data_dir)["active"]["slot"]]
    with Load(deployment) as load:
        load.wait_answers(20)
        database.stop()
        stopped = time.monotonic()
        wait_for(lambda: ready(port) == 503, 60, "/readyz to report the audit log down")
        load.wait_answers(50)
        database.start()
        restarted = time.monotonic()
        wait_for(lambda: ready(port) == 200, 120, "/readyz to recover")
        outage = load.wait_recovered(restarted, timeout=120)
        load.wait_answers(20)
    during = [a for a in load.answers if stopped < a.sent < restarted]
    assert len(during) >= 50 and {a.status for a in during} == {503}
    assert_answers_audited(deployment, load)
    result = audit.verify_store(deployment.data_dir, use_checkpoints=False)
    assert result.ok, result.problem
    print(f"service back {outage:.2f} s after the database")

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.django_db


def test_health_ok_with_database_and_broker(api):
    response = api.get("/api/v1/health/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    # No worker consumes the test Redis here: the site still serves, degraded.
    assert body["checks"]["workers"]["ok"] is False and body["status"] == "degraded"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends: nothing listens there


def test_health_degraded_not_down_when_the_broker_is_down(api, settings):
    # Searches still answer without the broker (first stage, flagged): a load balancer must keep the node.
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_closed_port()}/0"
    response = api.get("/api/v1/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["ok"] is False and body["checks"]["broker"]["error"]
    assert body["checks"]["workers"]["ok"] is False


@pytest.mark.django_db(transaction=True)
def test_health_sees_a_running_worker_and_does_not_wait_out_the_timeout(api, celery_worker, settings):
    settings.SEMART_API = {**settings.SEMART_API, "health_timeout_s": 20.0}
    body = api.get("/api/v1/health/").json()
    assert body["status"] == "ok", body
    assert body["checks"]["workers"]["ok"] and len(body["checks"]["workers"]["workers"]) == 1
    # The check returns on the first reply: waiting for every worker would take the whole 20 s.
    assert body["checks"]["workers"]["ms"] < 10_000, body

import json
import logging
import socket
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from ml_assets.core.monitoring.alerts import Alert, send_alert

LOGGER = "ml_assets.test_alerts"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Keep every request on loopback even where a proxy is configured in the environment."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def receiver():
    """A local webhook on 127.0.0.1 that records requests and answers with `state["status"]`."""
    state = {"status": 200, "requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state["requests"].append((self.path, self.headers["Content-Type"], body))
            self.send_response(state["status"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _alert():
    return Alert(
        kind="degradation",
        model="churn",
        title="roc_auc fell 6.2%",
        details={"reference": 0.8, "current": np.float64(0.75), "ece": float("nan"), "rows": np.int64(3)},
        at=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    )


def test_webhook_receives_json(receiver, caplog):
    logger = logging.getLogger(LOGGER)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert send_alert(_alert(), receiver["url"], logger=logger) is True
    [(path, content_type, body)] = receiver["requests"]
    assert path == "/hooks/secret-token" and content_type == "application/json"
    payload = json.loads(body)
    assert payload == {
        "kind": "degradation",
        "model": "churn",
        "title": "roc_auc fell 6.2%",
        "details": {"reference": 0.8, "current": 0.75, "ece": None, "rows": 3},
        "at": "2024-05-01T12:30:00+00:00",
    }
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "degradation" in record.getMessage()
    assert "churn" in record.getMessage()


def test_webhook_500_returns_false_and_logs(receiver, caplog):
    receiver["status"] = 500
    logger = logging.getLogger(LOGGER)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert send_alert(_alert(), receiver["url"], logger=logger) is False
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "500" in errors[0].getMessage()
    assert "secret-token" not in errors[0].getMessage()  # the webhook path is not logged
    assert len(receiver["requests"]) == 1


def test_refused_connection_returns_false_without_raising(caplog):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    logger = logging.getLogger(LOGGER)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert send_alert(_alert(), f"http://127.0.0.1:{port}/hook", logger=logger, timeout_s=2) is False
    [warning, error] = caplog.records
    assert warning.levelno == logging.WARNING
    assert error.levelno == logging.ERROR and "failed" in error.getMessage()


def test_timeout_returns_false():
    # listening but never answering: the connection is accepted by the kernel, the read times out
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        assert send_alert(_alert(), url, logger=logging.getLogger(LOGGER), timeout_s=0.2) is False


def test_no_webhook_only_logs(caplog):
    with caplog.at_level(logging.WARNING, logger="ml_assets.core.monitoring.alerts"):
        assert send_alert(Alert("check_failed", None, "null player ids")) is True
    assert len(caplog.records) == 1 and "check_failed" in caplog.records[0].getMessage()


def test_non_http_url_is_refused(caplog, tmp_path):
    logger = logging.getLogger(LOGGER)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert send_alert(_alert(), f"file://{tmp_path}/x", logger=logger) is False
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_alert_defaults_to_now_in_utc():
    alert = Alert("drift", "churn", "psi 0.3")
    assert alert.at.tzinfo is UTC and alert.details == {}
    assert (datetime.now(UTC) - alert.at).total_seconds() < 60

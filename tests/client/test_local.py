"""The in-process server of `structgen extract --local` (structgen/client/local.py): a real server on a loopback
port, its own key, quiet logs unless the run fails, and a clean shutdown."""

from __future__ import annotations

import json
import logging

import pytest

import structgen
from structgen import Client
from structgen.client.local import _server_logs, local_server


def test_server_logs_show_warnings_and_keep_the_rest_for_a_failure(capsys):
    log = logging.getLogger("structgen.server.requests")
    with _server_logs():
        log.info("quiet info")
        log.warning("loud warning")
    err = capsys.readouterr().err
    assert "loud warning" in err and "quiet info" not in err
    with pytest.raises(RuntimeError):
        with _server_logs():
            log.info("kept info")
            raise RuntimeError("boom")
    assert "kept info" in capsys.readouterr().err
    assert not logging.getLogger("structgen").handlers  # restored


@pytest.mark.slow
def test_local_server_is_a_real_server_on_a_port(caplog):
    caplog.set_level(logging.INFO, logger="structgen.server.requests")
    with local_server(in_flight=4) as srv:
        assert srv.target.startswith("127.0.0.1:") and not srv.target.endswith(":0")
        with Client(srv.target, api_key=srv.api_key, timeout=300) as c:
            assert c.health()
            assert c.generate("Is water wet? Answer:", choices=["yes", "no"], max_tokens=3).text in ("yes", "no")
        with Client(srv.target, timeout=30) as stranger:  # the key is this run's own
            with pytest.raises(structgen.Unauthenticated):
                stranger.generate("x", max_tokens=1)
    calls = [json.loads(r.getMessage()) for r in caplog.records if r.name == "structgen.server.requests"]
    assert [(c["method"], c["status"]) for c in calls] == [("Generate", "OK")]  # the stranger never got in
    with Client(srv.target) as c:  # shut down: nothing listens there any more
        assert not c.health(timeout=2)

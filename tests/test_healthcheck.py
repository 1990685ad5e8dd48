"""`mnist-codec-healthcheck`, the containers' health check: 0 only for a 200 from /readyz."""

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from app.service import healthcheck


@pytest.fixture
def readyz() -> Iterator[tuple[str, list[int]]]:
    """A stand-in /readyz on a loopback port; append a status to the list to set what it answers."""
    status = [200]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status[-1] if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/readyz", status
    finally:
        server.shutdown()
        server.server_close()


def test_ready_is_healthy_and_not_ready_is_not(readyz: tuple[str, list[int]]) -> None:
    url, status = readyz
    assert healthcheck.main([url]) == 0
    status.append(503)  # loading, or shutting down
    assert healthcheck.main([url]) == 1


def test_nothing_listening_is_unhealthy(capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main(["http://127.0.0.1:9/readyz"]) == 1
    assert "unhealthy: http://127.0.0.1:9/readyz" in capsys.readouterr().err


def test_the_installed_command_runs_it(readyz: tuple[str, list[int]]) -> None:
    """The console script the Dockerfile's HEALTHCHECK names, as a bare command (nothing to quote)."""
    command = Path(sys.executable).parent / "mnist-codec-healthcheck"
    assert command.is_file(), "pyproject's [project.scripts] installs it"
    assert subprocess.run([str(command), readyz[0]], timeout=30).returncode == 0

"""The descriptor limit (app.service.protocol): lifted at server start to fit the connection bound, never at import.

Each case runs in a fresh interpreter started at a soft limit of 512 open files, so that what
it sees is this code's doing, whatever limit pytest runs under.
"""

import json
import resource
import subprocess
import sys

import pytest
from conftest import ROOT

SOFT = 512
CONNECTIONS = 200  # MNIST_CODEC_MAX_CONNECTIONS: the limit wanted is these plus 1024

START_LOW = f"""
import json, resource
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, ({SOFT}, hard))
def soft(): return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
"""

IMPORT = (
    START_LOW
    + """
import app.service.protocol, app.main
print(json.dumps({"soft": soft()}))
"""
)

SERVE = (
    START_LOW
    + """
import asyncio, uvicorn
from app.service.protocol import LimitedHttpToolsProtocol

async def start_and_stop(server):
    before = soft()
    server.config.load()  # what Server._serve does before its startup
    server.lifespan = server.config.lifespan_class(server.config)
    await server.startup()  # the lifespan, then the sockets
    after = soft()
    server.should_exit = True
    await server.shutdown()
    print(json.dumps({"before": before, "after": after, "hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1]}))

def run(self):  # as uvicorn's Server.run: the lifespan finds the server up the call stack by this frame's `self`
    asyncio.run(start_and_stop(self))

config = uvicorn.Config("app.main:app", host="127.0.0.1", port=0, http=LimitedHttpToolsProtocol, log_level="warning")
run(uvicorn.Server(config))
"""
)


def run_python(code: str) -> dict[str, int]:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < SOFT:
        pytest.skip(f"the hard limit on open files is under {SOFT}")
    env = {"PATH": "/usr/bin:/bin", "MNIST_CODEC_MAX_CONNECTIONS": str(CONNECTIONS), "MNIST_CODEC_DEVICE": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_importing_the_service_changes_no_limit() -> None:
    assert run_python(IMPORT) == {"soft": SOFT}


def test_the_server_start_lifts_the_limit() -> None:
    seen = run_python(SERVE)
    assert seen["before"] == SOFT
    assert seen["after"] == min(seen["hard"], CONNECTIONS + 1024)

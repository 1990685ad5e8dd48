"""The container, compose file, Makefile and CI script agree with each other and with the tests."""

import json
import tomllib

import yaml
from conftest import ROOT

from app.settings import Settings
from bench.server import container_command


def test_container_runs_uvicorn_on_all_interfaces_port_8000() -> None:
    argv = container_command()
    assert argv[:2] == ["uvicorn", "app.main:app"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == "8000"


def test_container_serves_with_the_limited_httptools_protocol() -> None:
    """Header limits, the head deadline, the connection bound and pipelining live in this protocol."""
    argv = container_command()
    assert argv[argv.index("--http") + 1] == "app.service.protocol:LimitedHttpToolsProtocol"


def test_make_serve_is_the_container_command() -> None:
    makefile = (ROOT / "Makefile").read_text()
    serve_args = next(line for line in makefile.splitlines() if line.startswith("SERVE_ARGS :="))
    assert serve_args.removeprefix("SERVE_ARGS :=").split() == container_command()[1:]


def test_dockerfile_runs_as_non_root_with_weights_and_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in dockerfile and "/readyz" in dockerfile
    assert "model_weights/mlp6.pt" in dockerfile
    assert (ROOT / "model_weights" / "mlp6.pt").is_file()


def test_dockerfile_copies_every_default_model() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for path in Settings.model_fields["models"].default:
        assert f"COPY {path} " in dockerfile, path
        assert (ROOT / path).is_file()


def test_compose_serves_port_8000_on_a_gpu_with_healthcheck() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["codec"]
    assert service["build"] == "."
    assert "8000:8000" in service["ports"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "/readyz" in json.dumps(service["healthcheck"]["test"])
    assert service["restart"] in ("unless-stopped", "always", "on-failure")
    assert service["read_only"] is True and "/tmp" in service["tmpfs"]
    assert service["user"] not in ("root", "0")
    grace = int(service["stop_grace_period"].removesuffix("s"))
    argv = container_command()
    assert grace > int(argv[argv.index("--timeout-graceful-shutdown") + 1])


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make serve" in (ROOT / "README.md").read_text()


def test_pyproject_declares_the_runtime_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split("[")[0].split(">")[0].split("=")[0] for dep in project["dependencies"]}
    assert {"fastapi", "uvicorn", "torch", "torchvision", "numpy", "pillow", "pydantic-settings"} <= names
    assert project["requires-python"] == ">=3.11"

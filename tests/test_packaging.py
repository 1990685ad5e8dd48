"""The container, compose file, Makefile and CI script agree with each other and with the tests."""

import re
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
    assert "HEALTHCHECK" in dockerfile and "mnist-codec-healthcheck" in dockerfile  # it asks /readyz
    assert "model_weights/mlp6.safetensors" in dockerfile
    assert (ROOT / "model_weights" / "mlp6.safetensors").is_file()


def test_dockerfile_copies_every_default_model() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for path in Settings.model_fields["models"].default:
        assert f"COPY {path} " in dockerfile, path
        assert (ROOT / path).is_file()


def test_compose_serves_port_8000_with_healthcheck_on_the_cpu_image() -> None:
    """docker-compose.yml alone (`docker compose -f docker-compose.yml up`): the CPU image, no GPU asked for."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["codec"]
    assert service["build"] == {"context": ".", "target": "cpu"} and "deploy" not in service
    assert "8000:8000" in service["ports"]
    assert service["healthcheck"]["test"] == "mnist-codec-healthcheck"
    assert service["restart"] in ("unless-stopped", "always", "on-failure")
    assert service["read_only"] is True and "/tmp" in service["tmpfs"]
    assert service["user"] not in ("root", "0")
    grace = int(service["stop_grace_period"].removesuffix("s"))
    argv = container_command()
    assert grace > int(argv[argv.index("--timeout-graceful-shutdown") + 1])


def test_plain_compose_up_is_the_gpu_image_on_the_gpu() -> None:
    """`docker compose up` reads docker-compose.override.yml too: it swaps in the GPU image and reserves the GPU."""
    override = yaml.safe_load((ROOT / "docker-compose.override.yml").read_text())["services"]["codec"]
    assert override["build"] == {"context": ".", "target": "gpu"}
    devices = override["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert override["image"] != yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["codec"]["image"]


def test_every_healthcheck_is_a_bare_command() -> None:
    """Nothing to quote: a bare word (the shell runs it as is) or a list of plain words, run as written by any compose."""
    tests = [
        service["healthcheck"]["test"]
        for name in ("docker-compose.yml", "docker-compose.scale.yml")
        for service in yaml.safe_load((ROOT / name).read_text())["services"].values()
    ]
    assert len(tests) == 3
    for test in tests:  # one bare word (the shell runs it as is), or an exec-form list of plain words
        words = [test] if isinstance(test, str) else test[1:]
        assert isinstance(test, str) or test[0] == "CMD", test
        assert all(re.fullmatch(r"[\w./:-]+", word) for word in words), test
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["mnist-codec-healthcheck"]' in dockerfile
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mnist-codec-healthcheck"] == "app.service.healthcheck:main"


def test_dockerfile_builds_a_cpu_and_a_gpu_image_from_the_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\S+)", dockerfile, re.M)
    assert {"cpu", "gpu"} <= set(stages) and stages[-1] == "cpu", "a plain docker build gives the CPU image"
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all("-c /src/requirements.lock" in line for line in installs)
    assert any('"/src[gpu]"' in line for line in installs) and any(
        line.rstrip().endswith("/src &&") or " /src && " in line for line in installs
    )


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make serve" in (ROOT / "README.md").read_text()


def test_pyproject_declares_the_runtime_dependencies() -> None:
    """The service needs no torch; the extras add it for the GPU, training and development."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(deps: list[str]) -> set[str]:
        return {re.split(r"[\[<>=]", dep)[0] for dep in deps}

    core = names(project["dependencies"])
    assert {"fastapi", "uvicorn", "numpy", "safetensors", "pillow", "pydantic-settings"} <= core
    assert not core & {"torch", "torchvision"}
    extras = project["optional-dependencies"]
    assert "torch" in names(extras["gpu"]) and "torch" in names(extras["torch"])
    assert {"torch", "torchvision"} <= names(extras["train"]) <= names(extras["dev"])
    assert project["requires-python"] == ">=3.11"


def test_the_lock_pins_every_package_of_every_extra() -> None:
    """requirements.lock (make lock) pins each dependency, direct or not, to one version; make install uses it."""
    lock = (ROOT / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", lock, re.M))
    requirements = [line for line in lock.splitlines() if line and not line.startswith(("#", " "))]
    assert len(pins) == len(requirements) > 50, [r for r in requirements if "==" not in r]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [project["dependencies"], *project["optional-dependencies"].values()]
    for dep in (d for group in wanted for d in group):
        name = re.split(r"[\[<>=]", dep)[0]
        assert any(pin.lower().replace("_", "-") == name.lower() for pin in pins), name
    makefile = (ROOT / "Makefile").read_text()
    assert "-c $(LOCK) -e '.[dev]'" in makefile and "pip-compile" in makefile

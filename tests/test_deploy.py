"""Beyond one machine: the scale-out compose file, its nginx, and the Kubernetes manifests.

No cluster and no Docker run here: the manifests are validated offline against the
Kubernetes API schemas that `kubernetes-validate` ships, and every file is checked
against the app's own settings and the container's command. nginx's configuration is
also checked by nginx itself, and run in front of a real server, where nginx is installed.
"""

import copy
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from conftest import ROOT, LiveServer

from app.settings import Settings
from bench.server import container_command, free_port

K8S_VERSION = "1.31.0"
MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
MAX_UPLOAD = Settings.model_fields["max_upload_bytes"].default


def container_port() -> int:
    argv = container_command()
    return int(argv[argv.index("--port") + 1])


def graceful_shutdown_s() -> int:
    argv = container_command()
    return int(argv[argv.index("--timeout-graceful-shutdown") + 1])


def manifests() -> dict[str, dict[str, Any]]:
    """Every manifest under deploy/k8s, by kind."""
    docs = [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]
    return {doc["kind"]: doc for doc in docs}


def nginx_directive(name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;{{}}]+);", NGINX_CONF.read_text(), flags=re.MULTILINE)


def size_in_bytes(value: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    match = re.fullmatch(r"(\d+)([kmg]?)", value.lower())
    assert match, f"unexpected size {value!r}"
    number, unit = match.groups()
    return int(number) * units[unit]


# --------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in MANIFESTS])
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_catches_a_misspelt_field() -> None:
    deployment = copy.deepcopy(manifests()["Deployment"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbes"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_the_deployment_asks_for_a_gpu_and_probes_the_right_endpoints() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])  # the HPA needs the CPU request
    [port] = container["ports"]
    assert port["containerPort"] == container_port()
    probes = {kind: container[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == probes["startupProbe"]["path"] == "/readyz"
    assert all(probe["port"] in (port["name"], port["containerPort"]) for probe in probes.values())
    assert pod["terminationGracePeriodSeconds"] > graceful_shutdown_s()


def test_the_deployment_keeps_the_containers_settings() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    env = {item["name"]: item["value"] for item in pod["containers"][0]["env"]}
    assert int(env["MNIST_CODEC_MAX_UPLOAD_BYTES"]) == MAX_UPLOAD
    dockerfile_user = next(
        line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")
    )
    assert str(pod["securityContext"]["runAsUser"]) == dockerfile_user
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_service_and_autoscaler_point_at_the_deployment() -> None:
    docs = manifests()
    deployment, service, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    assert port["targetPort"] == deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


# --------------------------------------------------------------------------- compose and nginx


def test_the_scaled_codec_service_is_the_single_one_without_its_port() -> None:
    single = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["codec"]
    scaled = yaml.safe_load((ROOT / "docker-compose.scale.yml").read_text())["services"]["codec"]
    assert scaled.pop("expose") == [str(container_port())]
    assert scaled.pop("deploy") == {"replicas": 3}
    single.pop("ports")
    assert scaled == single


def test_the_proxy_publishes_8000_and_checks_readiness() -> None:
    proxy = yaml.safe_load((ROOT / "docker-compose.scale.yml").read_text())["services"]["proxy"]
    assert "8000:80" in proxy["ports"]
    assert "/readyz" in " ".join(proxy["healthcheck"]["test"])
    assert proxy["depends_on"]["codec"]["condition"] == "service_healthy"
    [mount] = proxy["volumes"]
    assert (ROOT / mount.split(":")[0]).resolve() == NGINX_CONF


def test_nginx_and_the_app_agree_on_the_upload_limit_and_port() -> None:
    [limit] = nginx_directive("client_max_body_size")
    assert size_in_bytes(limit) == MAX_UPLOAD
    compose = yaml.safe_load((ROOT / "docker-compose.scale.yml").read_text())["services"]["codec"]
    assert int(compose["environment"]["MNIST_CODEC_MAX_UPLOAD_BYTES"]) == MAX_UPLOAD
    assert f"{MAX_UPLOAD} bytes" in NGINX_CONF.read_text()  # nginx's own 413 names the same limit
    [server] = nginx_directive("server")
    assert server.split()[0] == f"codec:{container_port()}"
    [retry] = nginx_directive("proxy_next_upstream")
    assert {"error", "timeout", "http_503"} <= set(retry.split())


@pytest.fixture
def nginx(live_server: LiveServer, tmp_path: Path) -> Iterator[str]:
    """deploy/nginx.conf run by the local nginx, in front of the live server."""
    binary = shutil.which("nginx", path="/usr/sbin:/usr/bin:/usr/local/sbin")
    if binary is None:
        pytest.skip("nginx is not installed (make test-tools, or apt-get install nginx-light)")
    port = free_port()
    conf = NGINX_CONF.read_text()
    conf = conf.replace("server codec:8000", f"server {live_server.url.removeprefix('http://')}")
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    (tmp_path / "nginx.conf").write_text(conf)
    command = [binary, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", f"pid {tmp_path}/nginx.pid;"]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [*command[:-1], f"pid {tmp_path}/nginx.pid; daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"nginx did not start: {process.stderr.read() if process.stderr else ''}")
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr:
            process.stderr.close()


def test_through_nginx(nginx: str, seven_png: bytes) -> None:
    with httpx.Client(base_url=nginx, timeout=10) as client:
        assert client.get("/readyz").status_code == 200
        encoded = client.post(
            "/encode", files={"img": ("7.png", seven_png, "image/png")}, headers={"x-request-id": "px-1"}
        )
        assert (encoded.status_code, len(encoded.content)) == (200, 24)
        assert encoded.headers["x-request-id"] == "px-1"
        assert re.fullmatch(r"[0-9a-f]{32}", client.get("/healthz").headers["x-request-id"])  # nginx's own id
        too_large = client.post("/decode", content=b"\x00" * (MAX_UPLOAD + 1))
        assert too_large.status_code == 413
        assert str(MAX_UPLOAD) in too_large.json()["detail"]
        assert "x-request-id" not in too_large.headers  # refused by nginx itself, never reached the app
        at_limit = client.post("/decode", content=b"\x00" * MAX_UPLOAD)
        assert at_limit.status_code == 422  # passed by nginx; the app says what is wrong with it

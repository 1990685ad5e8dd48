"""`make image-test`: build the CPU image (or the GPU one, `--target gpu`), run it, and check it.

Uses docker when a docker daemon answers, else podman. Checks, each printed as it passes:
the image runs as a non-root user on a read-only root filesystem; /readyz answers 200
within READY_BOUND_S; /encode and /decode give byte for byte what the service on this
host gives for the test digits, for every model; the image's own HEALTHCHECK command
passes; SIGTERM stops it cleanly (exit 0, uvicorn's shutdown lines in the log). Prints
the image size and the time to ready.

The Dockerfile is the one users build. What this machine needs besides is here, and
only here (used with podman):
- podman's default runtime, crun, fails on setrlimit and cgroups on these machines:
  runc, and nofile/nproc ulimits below the hard limits;
- no registry is reachable: when the base image cannot be pulled, it is made locally
  with debootstrap (the same Debian release, with python3 and python3-venv) and
  `podman import`ed under the base image's name;
- inside a build the package index's TLS is not trusted: pip installs from a wheelhouse
  made here from the lock (offline and pinned), mounted into the build with pip.conf.
"""

import argparse
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".image-test"  # wheelhouse and base root filesystem; ignored by git and by the build context
DIGITS = sorted((ROOT / "tests" / "data" / "digits").glob("*.png"))
MODELS = ["mlp6", "mlp24"]
READY_BOUND_S = 30.0
# The service's own argv (Makefile SERVE_ARGS) but for the address: the host side of the byte comparison.
SERVE = [
    "--http", "app.service.protocol:LimitedHttpToolsProtocol",
    "--host", "127.0.0.1", "--timeout-graceful-shutdown", "10", "--no-access-log",
]  # fmt: skip


def log(message: str) -> None:
    print(f"image-test: {message}", flush=True)


def run(*argv: str, check: bool = True, timeout: float = 900, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, text=True, capture_output=True, timeout=timeout, **kwargs)  # type: ignore[call-overload, no-any-return]


class Engine:
    """The container CLI: docker when its daemon answers, else podman (with this machine's workarounds)."""

    def __init__(self, skip_without: bool = False) -> None:
        if shutil.which("docker") and run("docker", "info", check=False, timeout=30).returncode == 0:
            self.name, self.base = "docker", ["docker"]
            self.run_args: list[str] = []
        elif shutil.which("podman"):
            self.name = "podman"
            self.base = ["podman", "--runtime", "runc"] if shutil.which("runc") else ["podman"]
            self.run_args = [f"--ulimit={name}={n}:{n}" for name, n in self.ulimits().items()]
        elif skip_without:
            log("skipped: neither a docker daemon nor podman is here (make test-tools installs podman)")
            sys.exit(0)
        else:
            sys.exit("image-test: neither a docker daemon nor podman is here (make test-tools installs podman)")

    @staticmethod
    def ulimits() -> dict[str, int]:
        # runc refuses limits above the hard ones (and, here, nproc well below them): 4096 is plenty.
        limits = {"nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC}
        out = {}
        for name, which in limits.items():
            hard = resource.getrlimit(which)[1]
            out[name] = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
        return out

    def __call__(self, *argv: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return run(*self.base, *argv, check=check, timeout=timeout)


def base_image() -> str:
    match = re.search(r"^ARG BASE_IMAGE=(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert match, "the Dockerfile names its base image in ARG BASE_IMAGE"
    return match.group(1)


def ensure_base(engine: Engine, image: str) -> None:
    """The base image, pulled, or made with debootstrap when no registry answers (podman only)."""
    if engine("image", "inspect", image, check=False).returncode == 0:
        return
    if engine("pull", image, check=False, timeout=120).returncode == 0:
        return
    if engine.name != "podman" or not shutil.which("debootstrap"):
        sys.exit(f"image-test: cannot pull {image}, and no podman + debootstrap to make it")
    release = image.rsplit("-", 1)[-1]  # python:3.11-slim-bookworm -> bookworm
    log(f"no registry: making {image} with debootstrap ({release}, python3)")
    rootfs = WORK / f"rootfs-{release}"
    shutil.rmtree(rootfs, ignore_errors=True)
    run(
        "debootstrap", "--variant=minbase", "--include=python3,python3-venv", release, str(rootfs),
        "http://deb.debian.org/debian", timeout=1200,
    )  # fmt: skip
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"):
        for path in (rootfs / junk).glob("*"):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")  # the python image's command name
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run(
        [*engine.base, "import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
         "--change", "ENV LANG=C.UTF-8", "-", f"docker.io/library/{image}"],
        stdin=tar.stdout, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    tar.wait()
    shutil.rmtree(rootfs)


def wheelhouse(target: str) -> Path:
    """Every wheel the image installs, at the lock's versions, plus what building the package needs."""
    house = WORK / "wheelhouse"
    house.mkdir(parents=True, exist_ok=True)
    lock = (ROOT / "requirements.lock").read_text()
    build_tools = [line for line in lock.splitlines() if re.match(r"^(pip|setuptools)==", line)]
    spec = "." if target == "cpu" else ".[gpu]"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "-c", "requirements.lock", "-w", str(house), spec,
        *build_tools, cwd=ROOT, timeout=1800)  # fmt: skip
    (house / "pip.conf").write_text("[global]\nno-index = true\nfind-links = /wheelhouse\n")
    return house


def build(engine: Engine, target: str, tag: str) -> None:
    started = time.monotonic()
    ensure_base(engine, base_image())
    log(f"base image {base_image()} there after {time.monotonic() - started:.0f} s")
    argv = ["build", "--target", target, "-t", tag]
    if engine.name == "podman":
        started = time.monotonic()
        house = wheelhouse(target)
        log(f"wheelhouse from the lock made in {time.monotonic() - started:.0f} s")
        argv += ["--format", "docker", "--pull=never", *engine.run_args]  # docker format: HEALTHCHECK kept
        argv += ["-v", f"{house}:/wheelhouse:ro", "-v", f"{house / 'pip.conf'}:/etc/pip.conf:ro"]
    started = time.monotonic()
    result = engine(*argv, str(ROOT), check=False, timeout=3600)
    if result.returncode:
        sys.exit(f"image-test: build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    log(f"built {tag} (target {target}) with {engine.name} in {time.monotonic() - started:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, bound: float, alive: object = None) -> float:
    started = time.monotonic()
    while time.monotonic() - started < bound:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"image-test: {url}/readyz not 200 within {bound:.0f} s")


def post(url: str, body: bytes, content_type: str) -> bytes:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        data: bytes = response.read()
        return data


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "mnistcodecimagetest"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def answers(url: str) -> list[bytes]:
    """For every model and test digit: /encode's bytes, then /decode's PNG for them."""
    out = []
    for model in MODELS:
        for path in DIGITS:
            latent = post(f"{url}/encode?model={model}", *multipart("img", path.name, path.read_bytes()))
            out += [latent, post(f"{url}/decode?model={model}", latent, "application/octet-stream")]
    return out


def host_answers() -> list[bytes]:
    """The same requests to the service run here, from the source tree, with the same command."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", *SERVE, "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MNIST_CODEC_DEVICE": "cpu"},
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}", READY_BOUND_S)
        return answers(f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait(20)


def check_container(engine: Engine, tag: str) -> None:
    name = f"mnist-codec-image-test-{os.getpid()}"
    port = free_port()
    engine(
        "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", *engine.run_args,
        "-p", f"127.0.0.1:{port}:8000", "-e", "MNIST_CODEC_DEVICE=cpu", tag,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        ready = wait_ready(url, READY_BOUND_S)
        log(f"ok: /readyz 200 {ready:.2f} s after the container was started (bound {READY_BOUND_S:.0f} s)")
        status = engine("exec", name, "cat", "/proc/1/status").stdout  # uvicorn is the container's process 1
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        log(f"the server's resident memory once ready: {rss / 1024:.1f} MiB")

        user = engine("exec", name, "id", "-u").stdout.strip()
        assert user != "0", "the container runs as root"
        log(f"ok: runs as uid {user}, not root")
        denied = engine("exec", name, "sh", "-c", "touch /srv/probe", check=False)
        assert denied.returncode != 0 and "Read-only" in denied.stderr, denied
        log("ok: the root filesystem is read-only, and the service works on it")

        inside, here = answers(url), host_answers()
        assert inside == here, (
            f"{sum(a != b for a, b in zip(inside, here, strict=True))} answers differ from the host's"
        )
        log(f"ok: /encode and /decode byte-identical to the host service ({len(DIGITS)} digits x {MODELS})")

        health = json.loads(engine("image", "inspect", tag, "--format", "{{json .Config.Healthcheck}}").stdout)
        assert health["Test"] == ["CMD", "mnist-codec-healthcheck"], health
        passed = engine("healthcheck", "run", name, check=False) if engine.name == "podman" else None
        if passed is None:  # docker has no "healthcheck run": the same command, run by exec
            passed = engine("exec", name, *health["Test"][1:], check=False)
        assert passed.returncode == 0, passed
        log("ok: the image's HEALTHCHECK command passes")

        started = time.monotonic()
        engine("kill", "--signal", "TERM", name)
        code = engine("wait", name, timeout=30).stdout.strip().splitlines()[-1]
        logs = engine("logs", name).stderr
        assert code == "0" and "Finished server process" in logs, (code, logs[-2000:])
        log(f"ok: SIGTERM stopped it cleanly in {time.monotonic() - started:.1f} s (exit 0)")
    finally:
        engine("rm", "-f", name, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--tag", default=None, help="image tag (default mnist-codec:image-test-TARGET)")
    parser.add_argument("--skip-without-engine", action="store_true", help="exit 0 when no engine is here (make test)")
    args = parser.parse_args()
    tag = args.tag or f"mnist-codec:image-test-{args.target}"
    started = time.monotonic()
    engine = Engine(args.skip_without_engine)
    before = engine("image", "inspect", tag, "--format", "{{.Id}}", check=False).stdout.strip()
    build(engine, args.target, tag)
    if before and before != engine("image", "inspect", tag, "--format", "{{.Id}}").stdout.strip():
        engine("rmi", before, check=False)  # the tag's previous image: runs would otherwise pile them up
    size = int(engine("image", "inspect", tag, "--format", "{{.Size}}").stdout.strip())
    log(f"image {tag}: {size / 1e6:.0f} MB ({engine.name} image inspect)")
    check_container(engine, tag)
    log(f"passed in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()

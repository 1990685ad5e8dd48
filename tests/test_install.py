"""`pip install` of the built wheel, outside the checkout: `mnist-codec --local` finds the weights
that ship inside it (pyproject.toml [tool.setuptools.data-files]; app/client/cli.py looks there)."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import DIGITS_DIR, ROOT

from app.codec import latent

TIMEOUT_S = 600  # building the wheel fetches setuptools into an isolated build environment


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv in a temporary folder with the wheel installed; its bin/ folder."""
    work = tmp_path_factory.mktemp("install")
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(work / "dist"), str(ROOT)]
    subprocess.run(build, check=True, timeout=TIMEOUT_S, capture_output=True)
    [wheel] = (work / "dist").glob("mnist_codec-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)]
    subprocess.run(install, check=True, timeout=TIMEOUT_S, capture_output=True)
    # torch and the other dependencies come from this environment rather than a second download: its
    # site-packages as a plain path line, whose .pth files (the checkout's editable install) stay unread.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv / "bin"


def test_the_wheel_carries_the_weights_and_local_works_from_any_folder(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNIST_CODEC_")}
    where = subprocess.run(
        [str(installed / "python"), "-c", "import app; print(app.__file__)"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert where.startswith(str(installed.parent)), where  # the installed package, not the checkout
    seven = DIGITS_DIR / "test0000_digit7.png"
    for argv in (
        ["encode", str(seven), "-o", "7.lat", "--local"],
        ["decode", "7.lat", "-o", "7.png", "--local"],
        ["encode", str(seven), "-o", "7-24.lat", "--local", "--weights", str(weights_installed(installed, "mlp24"))],
    ):
        result = subprocess.run(
            [str(installed / "mnist-codec"), *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "7.lat").stat().st_size == latent.LATENT_BYTES
    assert (tmp_path / "7.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "latents.json").exists()


def weights_installed(bin_dir: Path, name: str) -> Path:
    share = bin_dir.parent / "share" / "mnist-codec" / "model_weights"
    return share / "mlp6.safetensors" if name == "mlp6" else share / "mlp24" / "mlp24.safetensors"

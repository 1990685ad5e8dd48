"""The folder layout and its import contracts (pyproject's [tool.importlinter], run by `make lint`)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run the contracts of `tree`'s pyproject on `tree`'s own app package."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_checkout_keeps_its_import_contracts() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "message"),
    [
        pytest.param(
            "codec/engine.py",
            "from app.service import errors",
            "app.codec is not allowed to import app.service",
            id="codec-up",
        ),
        pytest.param(
            "service/pages.py",
            "from app.training import quality",
            "app.service is not allowed to import app.training",
            id="service-sideways",
        ),
        pytest.param(
            "client/backends.py",
            "from app.service import schemas",
            "app.client is not allowed to import app.service",
            id="client-sideways",
        ),
        pytest.param(
            "training/quality.py", "import app.main", "app.training is not allowed to import app.main", id="training-up"
        ),
    ],
)
def test_a_wrong_import_breaks_the_contract(tmp_path: Path, module: str, wrong_import: str, message: str) -> None:
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "app" / module
    path.write_text(path.read_text() + f"\n{wrong_import}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout


def test_each_concern_has_its_folder() -> None:
    """No module left loose at the top of app/ but the app object and the bottom layer: settings and errors."""
    loose = sorted(p.name for p in (ROOT / "app").glob("*.py"))
    assert loose == ["__init__.py", "errors.py", "main.py", "settings.py"]
    folders = sorted(p.name for p in (ROOT / "app").iterdir() if (p / "__init__.py").exists())
    assert folders == ["client", "codec", "service", "training"]

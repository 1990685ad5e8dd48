"""Where the command keeps the model id of each latent file it writes, and how it writes files.

A latent file stays exactly its 24 raw bytes (so `numpy.fromfile` still reads it); the bytes do
not say which weights made them, and `mlp24` reads any 24 bytes as some digit. So `encode`
records each file's model id in `latents.json`, a manifest in the same folder:

    {"about": "mnist-codec: the model id (X-Model-Id) of each latent file here", "version": 1,
     "models": {"7.lat": "mlp24-0123456789ab", "8.lat": "mlp6-ba9876543210"}}

and `decode` looks the id up there on its own. Entries of other runs in the same folder are
kept. A `.lats` container (app.codec.container) carries its model id inside and needs no manifest.

Every file is written whole or not at all: to a temporary name beside it, then renamed.
"""

import json
import os
import uuid
from collections import defaultdict
from pathlib import Path

MANIFEST = "latents.json"
VERSION = 1
ABOUT = "mnist-codec: the model id (X-Model-Id) of each latent file here"


class ManifestError(Exception):
    """A manifest that exists but cannot be read; the message is one line."""


def write_atomically(path: Path, data: bytes) -> None:
    """`data` at `path`, never half written: a temporary file in the same folder, then a rename.
    (Not tempfile.mkstemp: its files are private, 0600; this one gets the usual umask permissions.)"""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "xb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read(folder: Path) -> dict[str, str]:
    """The file -> model id entries recorded in `folder`; {} when it has no manifest; ManifestError
    when it has one that cannot be read."""
    path = folder / MANIFEST
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: cannot read the model ids recorded there: {exc}") from exc
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, dict) or not all(isinstance(v, str) for v in models.values()):
        raise ManifestError(f'{path}: not an mnist-codec manifest (no "models" object of file -> model id)')
    return models


def record(model_ids: dict[Path, str]) -> None:
    """Add `file -> model id` to the manifest of each file's folder (one write per folder)."""
    by_folder: dict[Path, dict[str, str]] = defaultdict(dict)
    for path, model_id in model_ids.items():
        by_folder[path.parent][path.name] = model_id
    for folder, entries in by_folder.items():
        models = {**read(folder), **entries}
        body = {"about": ABOUT, "version": VERSION, "models": dict(sorted(models.items()))}
        write_atomically(folder / MANIFEST, (json.dumps(body, indent=1) + "\n").encode())


class Recorded:
    """Looks up recorded model ids, reading each folder's manifest once."""

    def __init__(self) -> None:
        self.folders: dict[Path, dict[str, str]] = {}

    def model_id(self, path: Path) -> str | None:
        """The id recorded for `path`, or None when its folder records none for it."""
        folder = path.parent
        if folder not in self.folders:
            self.folders[folder] = read(folder)
        return self.folders[folder].get(path.name)

"""Record the ec64 v1 latents that must decode forever: python tests/v1_latents.py.

Writes tests/data/ec64_v1_latents.json: for every test digit under tests/data/digits and every
effort level, the latent bytes (hex) that the committed ec64 v1 checkpoint gives it, and the
sha256 of the 784 pixels those bytes decode to. Run it only to record a new file on purpose:
the point of the file is that today's bytes are checked by tomorrow's code (tests/test_versions.py).
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

V1_WEIGHTS = ROOT / "model_weights" / "ec64" / "ec64.safetensors"
RECORDED = ROOT / "tests" / "data" / "ec64_v1_latents.json"


def pixels_sha256(pixels: np.ndarray) -> str:
    """The digest of decoded pixels: (28, 28) uint8, row-major bytes."""
    return hashlib.sha256(np.ascontiguousarray(pixels, np.uint8).tobytes()).hexdigest()


def record() -> dict[str, object]:
    import subprocess

    from conftest import load_digits

    from app.codec.codecs import load_codec

    codec = load_codec(V1_WEIGHTS, "cpu")
    digits = load_digits()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    latents: dict[str, list[dict[str, str]]] = {}
    for stem, _, pixels in digits:
        rows = []
        for level in range(codec.max_effort + 1):
            data = codec.encode(pixels, level)
            rows.append({"latent": data.hex(), "pixels_sha256": pixels_sha256(codec.decode_pixels(data))})
        latents[stem] = rows
    return {
        "about": "ec64 v1 latents of the test digits under tests/data/digits, per effort level (index = level), "
        "and the sha256 of the 28x28 uint8 pixels each decodes to; written by python tests/v1_latents.py "
        f"at commit {commit} from {V1_WEIGHTS.relative_to(ROOT)}",
        "model_id": codec.model_id,
        "levels": codec.max_effort + 1,
        "latents": latents,
    }


if __name__ == "__main__":
    RECORDED.write_text(json.dumps(record(), indent=1) + "\n")
    print(f"wrote {RECORDED}")

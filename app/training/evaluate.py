"""The rate-distortion study: `python -m app.training.evaluate`.

Every model the service has (the checkpoints of the service's settings) and the
classic image codecs, on the same MNIST test digits:

- a model goes through the service's own code path, one digit at a time:
  `Codec.encode` (the encoder, then the latent format's quantisation and
  packing) and `Codec.decode` (unpacking, the decoder, rounding to bytes, PNG);
- PNG (lossless, optimised), JPEG, WebP (lossy, method 6) and AVIF go through
  Pillow, as 8-bit grayscale images, at the settings in `CLASSIC_SETTINGS`;
- `--curve CHECKPOINT ...`: the entropy-coded model trained for other code sizes
  (`python -m app.training.train_ec --code-bytes N`, not served), through the same
  code path as a served model, drawn as the learned rate-distortion curve with the
  served `ec64`.

For each: the mean size in bytes, the mean per-image PSNR and the mean SSIM
(`app.training.quality`). Writes into --out a markdown table (`rate_distortion.md`), the
numbers (`rate_distortion.json`) and a plot of PSNR against bytes per digit on
a log axis (`rate_distortion.png`).
"""

import argparse
import io
import json
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, features

from app.codec import imaging
from app.codec.codecs import Codec, load_codec, load_codecs, pick_device
from app.errors import DataError, StartupError
from app.settings import Settings
from app.training import quality

log = logging.getLogger("app.training.evaluate")

# (codec, Pillow save arguments) per setting; qualities run down to each codec's smallest output.
CLASSIC_SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("PNG", {"optimize": True}),
    *[("JPEG", {"quality": q}) for q in (1, 5, 10, 25, 50, 75, 95)],
    *[("WebP", {"quality": q, "method": 6, "lossless": False}) for q in (0, 5, 10, 25, 50, 75)],
    *[("AVIF", {"quality": q}) for q in (0, 10, 25, 50, 75)],
]


@dataclass(frozen=True)
class Row:
    codec: str  # "PNG", "JPEG", ... or a model name
    setting: str  # "quality 10", or the model's latent format
    kind: str  # "model" (served), "curve" (the entropy-coded model at another size) or "classic"
    digits: int
    mean_bytes: float
    mean_psnr_db: float
    mean_ssim: float
    lossless: bool
    seconds: float  # wall time to encode and decode all digits


def available(codec: str) -> bool:
    """Pillow writes PNG and JPEG always; WebP and AVIF only when built with libwebp / libavif."""
    return codec in ("PNG", "JPEG") or bool(features.check(codec.lower()))


def classic_round_trip(pixels: np.ndarray, codec: str, params: dict[str, Any]) -> tuple[int, np.ndarray]:
    """Encode one (28, 28) uint8 digit with Pillow and decode it back: (size in bytes, decoded pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=codec, **params)
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as image:
        decoded = np.asarray(image.convert("L"), dtype=np.uint8)
    return len(data), decoded


def measure_classic(digits: np.ndarray, codec: str, params: dict[str, Any]) -> Row:
    start = time.perf_counter()
    sizes, decoded = zip(*(classic_round_trip(d, codec, params) for d in digits), strict=True)
    seconds = time.perf_counter() - start
    setting = ", ".join(f"{k} {v}" for k, v in params.items() if k in ("quality",)) or "optimize"
    return _row(codec, setting, "classic", digits, np.array(sizes), np.stack(decoded), seconds)


def measure_model(digits: np.ndarray, codec: Codec, kind: str = "model") -> Row:
    start = time.perf_counter()
    sizes, decoded = [], []
    for pixels in digits:
        data = codec.encode(pixels)
        sizes.append(len(data))
        decoded.append(imaging.read_digit(codec.decode(data)))
    seconds = time.perf_counter() - start
    if kind == "curve":
        name, setting = f"{codec.name} at {codec.format.nbytes} B", f"{codec.format.name}, {codec.format.nbytes} bytes"
    else:
        name, setting = codec.name, codec.format.name
    return _row(name, setting, kind, digits, np.array(sizes), np.stack(decoded), seconds)


def _row(
    codec: str, setting: str, kind: str, digits: np.ndarray, sizes: np.ndarray, decoded: np.ndarray, s: float
) -> Row:
    psnr = quality.psnr_db(digits, decoded)
    return Row(
        codec=codec,
        setting=setting,
        kind=kind,
        digits=len(digits),
        mean_bytes=float(sizes.mean()),
        mean_psnr_db=float(psnr.mean()),
        mean_ssim=float(quality.ssim(digits, decoded).mean()),
        lossless=bool((decoded == digits).all()),
        seconds=round(s, 2),
    )


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| codec | setting | mean bytes per digit | mean PSNR (dB) | mean SSIM |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        name = {"model": f"**{r.codec}** (this service)", "curve": f"{r.codec} (learned curve, not served)"}.get(
            r.kind, r.codec
        )
        psnr = "lossless" if r.lossless else f"{r.mean_psnr_db:.2f}"
        lines.append(f"| {name} | {r.setting} | {r.mean_bytes:.1f} | {psnr} | {r.mean_ssim:.4f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path, digits: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(8, 5))
    for codec, marker in (("JPEG", "s"), ("WebP", "^"), ("AVIF", "D")):
        points = [(r.mean_bytes, r.mean_psnr_db) for r in rows if r.codec == codec]
        if points:
            ax.plot(*zip(*points, strict=True), marker=marker, label=codec)
    learned = sorted((r.mean_bytes, r.mean_psnr_db) for r in rows if r.kind == "curve")
    if learned:
        ax.plot(*zip(*learned, strict=True), marker="o", color="black", label="ec64 recipe per size, short runs")
    for r in rows:
        if r.codec == "PNG":
            ax.axvline(r.mean_bytes, color="gray", linestyle="--", label=f"PNG, lossless ({r.mean_bytes:.0f} B)")
        elif r.kind == "model":
            ax.plot(r.mean_bytes, r.mean_psnr_db, marker="*", markersize=14, linestyle="none", label=r.codec)
            ax.annotate(f"{r.codec}: {r.mean_psnr_db:.1f} dB", (r.mean_bytes, r.mean_psnr_db), (9, -3),
                        textcoords="offset points", fontsize=8)  # fmt: skip
    ax.set(
        xscale="log",
        xlabel="bytes per digit (log scale)",
        ylabel="mean PSNR (dB)",
        title=f"Rate-distortion on {digits:,} MNIST test digits",
    )
    ax.set_xticks([12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768])
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(min([16.0, *(r.mean_bytes * 0.9 for r in rows)]), 1000)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_test_digits(root: Path, limit: int | None) -> np.ndarray:
    """The MNIST test digits as an (N, 28, 28) uint8 array, after the data checks training does."""
    from app.training.train import load_mnist

    _, test_x, _ = load_mnist(root, limit)
    return test_x.reshape(-1, imaging.SIDE, imaging.SIDE).numpy()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="python -m app.training.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=None, help="only the first N test digits (default all 10,000)")
    p.add_argument("--data-root", type=Path, default=Path("data"), help="MNIST root (default data)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="output folder (default docs)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="for the models (default cpu)")
    p.add_argument("--no-classic", action="store_true", help="measure the models only")
    p.add_argument(
        "--curve", type=Path, nargs="*", default=[], metavar="CHECKPOINT",
        help="ec64 checkpoints trained for other code sizes: the learned rate-distortion curve",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be positive")
    command = " ".join(["python -m app.training.evaluate", shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    settings = Settings()
    try:
        device = pick_device(args.device)
        digits = load_test_digits(args.data_root, args.limit)
        codecs = list(load_codecs(settings, device))
        curve = [load_codec(path, device) for path in args.curve]
    except (DataError, StartupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    torch.set_num_threads(1)  # batch-1 inference, as the service runs it
    rows = []
    for codec in codecs:
        rows.append(measure_model(digits, codec))
        log.info("%s", rows[-1])
    for codec in curve:
        rows.append(measure_model(digits, codec, "curve"))
        log.info("%s", rows[-1])
    if not args.no_classic:
        for name, params in CLASSIC_SETTINGS:
            if not available(name):
                log.warning("skipping %s %s: this Pillow cannot write %s", name, params, name)
                continue
            rows.append(measure_classic(digits, name, params))
            log.info("%s", rows[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    which = "the whole test set" if len(digits) == 10_000 else f"the first {len(digits):,} of the test set"
    header = f"Measured by `{command}` on {len(digits):,} MNIST test digits ({which}).\n\n"
    (args.out / "rate_distortion.md").write_text(header + markdown_table(rows))
    result = {"command": command, "digits": len(digits), "rows": [asdict(r) for r in rows]}
    (args.out / "rate_distortion.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out / "rate_distortion.png", len(digits))
    log.info("wrote %s", ", ".join(str(args.out / f"rate_distortion.{e}") for e in ("md", "json", "png")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

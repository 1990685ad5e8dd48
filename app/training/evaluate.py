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

- `--efforts`: every served model at every encode effort level (`app.codec.search`):
  the PSNR of its bytes as served, and its cost per digit alone and in a batch of
  `--batch` digits, both on one core (one BLAS thread, CPU time). On the whole test
  set the figures are also written beside each checkpoint (`<checkpoint>.efforts.json`),
  where the service reads them for `GET /models`.

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

from app.codec import blas, imaging
from app.codec.codecs import Codec, Codecs, figures_path, load_codec, load_codecs, pick_device
from app.errors import DataError, StartupError
from app.settings import Settings
from app.training import quality

log = logging.getLogger("app.training.evaluate")

# (classic format, Pillow save arguments) per setting; qualities run down to each format's smallest output.
CLASSIC_SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("PNG", {"optimize": True}),
    *[("JPEG", {"quality": q}) for q in (1, 5, 10, 25, 50, 75, 95)],
    *[("WebP", {"quality": q, "method": 6, "lossless": False}) for q in (0, 5, 10, 25, 50, 75)],
    *[("AVIF", {"quality": q}) for q in (0, 10, 25, 50, 75)],
]


@dataclass(frozen=True)
class Row:
    codec: str  # the table's column (any compression method): a classic format ("PNG", "JPEG", ...) or a model name
    setting: str  # "quality 10", or the model's latent format
    kind: str  # "model" (served), "curve" (the entropy-coded model at another size) or "classic"
    digits: int
    mean_bytes: float
    mean_psnr_db: float
    mean_ssim: float
    lossless: bool
    seconds: float  # wall time to encode and decode all digits


def available(classic_format: str) -> bool:
    """Pillow writes PNG and JPEG always; WebP and AVIF only when built with libwebp / libavif."""
    return classic_format in ("PNG", "JPEG") or bool(features.check(classic_format.lower()))


def classic_round_trip(pixels: np.ndarray, classic_format: str, params: dict[str, Any]) -> tuple[int, np.ndarray]:
    """Encode one (28, 28) uint8 digit with Pillow and decode it back: (size in bytes, decoded pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=classic_format, **params)
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as image:
        decoded = np.asarray(image.convert("L"), dtype=np.uint8)
    return len(data), decoded


def measure_classic(digits: np.ndarray, classic_format: str, params: dict[str, Any]) -> Row:
    start = time.perf_counter()
    sizes, decoded = zip(*(classic_round_trip(d, classic_format, params) for d in digits), strict=True)
    seconds = time.perf_counter() - start
    setting = ", ".join(f"{k} {v}" for k, v in params.items() if k in ("quality",)) or "optimize"
    return _row(classic_format, setting, "classic", digits, np.array(sizes), np.stack(decoded), seconds)


def version_label(codec: Codec, codecs: Codecs) -> str:
    """The model's name, and its id where the name has several versions (so their rows stay apart)."""
    return codec.name if len(codecs.versions[codec.name]) == 1 else f"{codec.name} {codec.model_id}"


def measure_model(digits: np.ndarray, codec: Codec, kind: str = "model", label: str | None = None) -> Row:
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
        name, setting = label or codec.name, codec.format.name
    return _row(name, setting, kind, digits, np.array(sizes), np.stack(decoded), seconds)


@dataclass(frozen=True)
class EffortRow:
    model: str
    model_id: str
    level: int
    steps: int
    sweeps: int
    cost: int  # decoder evaluations per digit
    digits: int
    psnr_db: float  # mean per-image PSNR of the bytes as served (PNG out)
    ssim: float
    us_per_digit: float  # one digit at a time, one core (CPU time, one BLAS thread)
    us_per_digit_batch: float  # in one encode_many of `batch` digits, one core
    alone_digits: int  # digits timed one at a time
    batch: int


def measure_efforts(
    digits: np.ndarray, codec: Codec, alone: int, batch: int, label: str | None = None
) -> list[EffortRow]:
    """Every effort level of `codec` on `digits`: quality as served, cost alone and in a batch.

    The bytes come from batches (a digit's bytes do not depend on its batch, which the tests
    check), then each latent goes through `Codec.decode` to a PNG and back.
    """
    rows = []
    for effort in codec.efforts:
        with blas.threads(1):  # more BLAS threads only fight over the small products (and other jobs' cores)
            data = b"".join(codec.encode_many(digits[i : i + 1000], effort.level) for i in range(0, len(digits), 1000))
        size = codec.format.nbytes
        decoded = np.stack(
            [imaging.read_digit(codec.decode(data[i * size : (i + 1) * size])) for i in range(len(digits))]
        )
        with blas.threads(1):
            codec.encode(digits[0], effort.level)  # warm: the search's decoder is made on first use
            start = time.process_time()
            for pixels in digits[:alone]:
                codec.encode(pixels, effort.level)
            us_alone = (time.process_time() - start) / min(alone, len(digits)) * 1e6
            start = time.process_time()
            codec.encode_many(digits[:batch], effort.level)
            us_batch = (time.process_time() - start) / min(batch, len(digits)) * 1e6
        rows.append(
            EffortRow(
                model=label or codec.name,
                model_id=codec.model_id,
                level=effort.level,
                steps=effort.steps,
                sweeps=effort.sweeps,
                cost=effort.cost,
                digits=len(digits),
                psnr_db=float(quality.psnr_db(digits, decoded).mean()),
                ssim=float(quality.ssim(digits, decoded).mean()),
                us_per_digit=round(us_alone, 1),
                us_per_digit_batch=round(us_batch, 1),
                alone_digits=min(alone, len(digits)),
                batch=min(batch, len(digits)),
            )
        )
        log.info("%s", rows[-1])
    return rows


def effort_table(rows: list[EffortRow]) -> str:
    lines = [
        "| model | effort | recipe | mean PSNR (dB) | mean SSIM | us per digit alone | us per digit in a batch |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        recipe = (
            "the encoder's single pass"
            if r.steps == 0
            else f"{r.steps} steps" + (f" + {r.sweeps} sweeps" if r.sweeps else "")
        )
        lines.append(
            f"| {r.model} | {r.level} | {recipe} | {r.psnr_db:.2f} | {r.ssim:.4f} | {r.us_per_digit:,.0f} "
            f"| {r.us_per_digit_batch:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def write_figures(path: Path, rows: list[EffortRow], command: str) -> None:
    """The figures `Codec` reads for `Effort.psnr_db` / `us_per_digit` (keyed by the model id)."""
    data = {
        "model_id": rows[0].model_id,
        "command": command,
        "about": "per effort level: mean PSNR on the MNIST test digits as served; us per digit alone and in a "
        "batch, on one core (CPU time, one BLAS thread)",
        "levels": [
            {k: v for k, v in asdict(r).items() if k not in ("model", "model_id", "alone_digits", "batch")}
            | {"alone_digits": r.alone_digits, "batch": r.batch}
            for r in rows
        ],
    }
    path.write_text(json.dumps(data, indent=1) + "\n")


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


def plot(rows: list[Row], path: Path, digits: int, efforts: Sequence[EffortRow] = ()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(8, 5))
    for classic_format, marker in (("JPEG", "s"), ("WebP", "^"), ("AVIF", "D")):
        points = [(r.mean_bytes, r.mean_psnr_db) for r in rows if r.codec == classic_format]
        if points:
            ax.plot(*zip(*points, strict=True), marker=marker, label=classic_format)
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
    for model in dict.fromkeys(r.model for r in efforts):
        levels = [r for r in efforts if r.model == model]
        ax.plot([24.0] * len(levels), [r.psnr_db for r in levels], marker="_", markersize=12, color="gray")
        top = levels[-1]
        ax.annotate(f"{model} at effort {top.level}: {top.psnr_db:.1f} dB", (24.0, top.psnr_db), (9, 2),
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
    from app.training.loop import load_mnist

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
    p.add_argument("--efforts", action="store_true", help="every model at every encode effort level")
    p.add_argument(
        "--keep-from", type=Path, metavar="JSON",
        help="an earlier rate_distortion.json: its classic and --curve rows are carried over (not re-measured)",
    )  # fmt: skip
    p.add_argument("--alone", type=int, default=200, help="--efforts: digits timed one at a time (default 200)")
    p.add_argument("--batch", type=int, default=1000, help="--efforts: the batch timed (default 1000)")
    p.add_argument(
        "--curve", type=Path, nargs="*", default=[], metavar="CHECKPOINT",
        help="ec64 checkpoints trained for other code sizes: the learned rate-distortion curve",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be positive")
    command = " ".join(["python -m app.training.evaluate", shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    kept: list[Row] = []
    kept_command = ""
    if args.keep_from is not None:
        earlier = json.loads(args.keep_from.read_text())
        kept = [Row(**r) for r in earlier["rows"] if r["kind"] != "model"]
        kept_command = earlier.get("rows_carried_over_from", earlier["command"])  # where they were measured
    settings = Settings()
    try:
        device = pick_device(args.device)
        digits = load_test_digits(args.data_root, args.limit)
        codecs = load_codecs(settings, device)
        curve = [load_codec(path, device) for path in args.curve]
    except (DataError, StartupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    torch.set_num_threads(1)  # batch-1 inference, as the service runs it
    rows = []
    for codec in codecs:
        rows.append(measure_model(digits, codec, label=version_label(codec, codecs)))
        log.info("%s", rows[-1])
    efforts: list[EffortRow] = []
    if args.efforts:
        for codec in codecs:  # every version once (two paths to the same weights: the first)
            path = Path(codec.source)  # loaded from the settings: a path
            measured = measure_efforts(digits, codec, args.alone, args.batch, version_label(codec, codecs))
            efforts += measured
            if len(digits) == 10_000:
                write_figures(figures_path(path), measured, command)
                log.info("wrote %s", figures_path(path))
            else:
                log.info("figures not written beside %s: only the whole test set counts", path)
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
    rows += [r for r in kept if r.digits == len(digits)]
    args.out.mkdir(parents=True, exist_ok=True)
    which = "the whole test set" if len(digits) == 10_000 else f"the first {len(digits):,} of the test set"
    header = f"Measured by `{command}` on {len(digits):,} MNIST test digits ({which}).\n\n"
    if kept:
        header += f"The rows of other codecs and of the learned curve: from `{kept_command}`, carried over.\n\n"
    table = header + markdown_table(rows)
    if efforts:
        table += (
            "\n## Encode effort\n\nEvery model at every effort level, the same 24 bytes: PSNR of the bytes as "
            "served; cost on one core (CPU time, one BLAS thread), one digit at a time "
            f"(the first {efforts[0].alone_digits:,} digits) and in one batch of {efforts[0].batch:,}.\n\n"
            + effort_table(efforts)
        )
    (args.out / "rate_distortion.md").write_text(table)
    result: dict[str, Any] = {"command": command, "digits": len(digits), "rows": [asdict(r) for r in rows]}
    if kept:
        result["rows_carried_over_from"] = kept_command
    if efforts:
        result["efforts"] = [asdict(r) for r in efforts]
    (args.out / "rate_distortion.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out / "rate_distortion.png", len(digits), efforts)
    log.info("wrote %s", ", ".join(str(args.out / f"rate_distortion.{e}") for e in ("md", "json", "png")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

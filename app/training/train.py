"""Train an autoencoder: `python -m app.training.train [--arch NAME]`.

Each architecture has its own recipe (`RECIPES`); every flag overrides it.

- `mlp6` (the default) is the reference recipe, unchanged: 50 epochs, batch 64,
  Adam lr 5e-4 constant, MSE loss, seed 42.
- `mlp24`: 60 epochs, batch 64, Adam with a one-cycle schedule peaking at
  lr 2e-3, seed 42, and a loss that is minus the mean per-image PSNR (the mean
  of 10 log10(MSE) over the batch) rather than the MSE: the evaluation averages
  PSNR over digits, and the MSE under-weights the digits that are already good.
- `ec64` is not trained here: `python -m app.training.train_ec` (a rate term,
  a learned prior and frequency tables).

Pixels are b / 255 in [0, 1]; training uses MNIST's 60,000 training digits and
validates on its 10,000 test digits. The whole data set lives in memory as one
uint8 tensor; a batch is an index into it (per-sample PIL transforms through a
DataLoader cost far more than the model itself).

Writes into --out (default `model_weights` for mlp6, `model_weights/<arch>` for
the others): the checkpoint (`<arch>.safetensors`, app.codec.checkpoint), metrics.json (command, config, data
checksums, per-epoch losses, final test metrics) and two pictures.
"""

import argparse
import json
import logging
import math
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from app.codec.checkpoint import utc_iso
from app.codec.codecs import pick_device
from app.codec.model import ARCH, ARCHITECTURES, CodecModel, build_model, save_checkpoint
from app.errors import DataError, StartupError
from app.training import data

log = logging.getLogger("app.training.train")

Schedule = Literal["constant", "onecycle"]
Loss = Literal["mse", "psnr"]


@dataclass(frozen=True)
class TrainConfig:
    arch: str = ARCH
    hidden: tuple[int, ...] | None = None  # hidden layer widths; None keeps the architecture's own
    epochs: int = 50
    batch_size: int = 64
    lr: float = 5e-4
    schedule: Schedule = "constant"
    loss: Loss = "mse"
    seed: int = 42
    limit: int | None = None
    out: Path = Path("model_weights")
    device: str = "auto"
    data_root: Path = Path("data")
    threads: int = 0  # CPU threads for torch; 0 keeps torch's default (one per core)


RECIPES: dict[str, TrainConfig] = {
    "mlp6": TrainConfig(),
    "mlp24": TrainConfig(
        arch="mlp24",
        epochs=60,
        batch_size=64,
        lr=2e-3,
        schedule="onecycle",
        loss="psnr",
        out=Path("model_weights/mlp24"),
    ),
}
# ec64 has its own trainer (a rate term, a prior, frequency tables): app.training.train_ec.
assert set(RECIPES) | {"ec64"} == set(ARCHITECTURES), "every architecture needs a recipe"


def parse_args(argv: Sequence[str] | None) -> TrainConfig:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--arch", choices=list(RECIPES), default=ARCH)
    d = RECIPES[pre.parse_known_args(argv)[0].arch]
    p = argparse.ArgumentParser(
        prog="python -m app.training.train",
        description=__doc__.split("\n\n")[0] + " Defaults shown are those of the chosen --arch.",
    )
    p.add_argument("--arch", choices=list(RECIPES), default=ARCH, help=f"architecture (default {ARCH})")
    p.add_argument(
        "--hidden", type=_widths, default=d.hidden, metavar="W1,W2,...",
        help="hidden layer widths of the encoder, mirrored in the decoder (default: the architecture's)",
    )  # fmt: skip
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"passes over the data (default {d.epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument(
        "--lr", type=float, default=d.lr, help=f"Adam learning rate, the peak one for onecycle (default {d.lr})"
    )
    p.add_argument("--schedule", choices=["constant", "onecycle"], default=d.schedule, help=f"default {d.schedule}")
    p.add_argument("--loss", choices=["mse", "psnr"], default=d.loss, help=f"mse or -mean PSNR (default {d.loss})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seeds weights, noise and shuffling (default {d.seed})")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training and test digits")
    p.add_argument("--out", type=Path, default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device, help="default auto (CUDA if any)")
    p.add_argument("--data-root", type=Path, default=d.data_root, help=f"MNIST root (default {d.data_root})")
    p.add_argument(
        "--threads", type=int, default=d.threads,
        help="CPU threads (default 0: one per core); 1 is faster on a machine other jobs keep busy",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or (args.limit is not None and args.limit < 1) or args.threads < 0:
        p.error("--epochs, --batch-size and --limit must be positive, --threads at least 0")
    return replace(d, **vars(args))


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 512,256, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return widths


def load_mnist(root: Path, limit: int | None) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """Training and test digits as (N, 784) uint8 tensors, and the files' MD5s."""
    from torchvision.datasets import MNIST  # slow to import; only training needs it

    raw = data.prepare(root)
    train = MNIST(str(root), train=True, download=False).data
    test = MNIST(str(root), train=False, download=False).data
    return train[:limit].reshape(-1, 784), test[:limit].reshape(-1, 784), data.verified_md5s(raw)


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 bytes -> float32 in [0, 1], exactly as the service maps them."""
    return pixels.to(torch.float32) / 255


@torch.inference_mode()
def evaluate(model: CodecModel, pixels: torch.Tensor, batch: int = 2000) -> dict[str, float]:
    """Test MSE, mean per-image PSNR, and the PSNR after the service's rounding to bytes.

    The model is in eval mode, so a quantised model's latents are rounded as on the wire.
    """
    model.eval()
    sq_errors, served_errors = [], []
    for chunk in torch.split(pixels, batch):
        x = to_unit(chunk)
        y = model(x)
        sq_errors.append(((y - x) ** 2).mean(dim=1))
        served = (y.clamp(0, 1) * 255).round() / 255
        served_errors.append(((served - x) ** 2).mean(dim=1))
    mse_per_image = torch.cat(sq_errors).double()
    served_per_image = torch.cat(served_errors).double()
    return {
        "mse": mse_per_image.mean().item(),
        "psnr_mean_db": psnr(mse_per_image).mean().item(),
        "served_psnr_mean_db": psnr(served_per_image).mean().item(),
    }


def psnr(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for images in [0, 1]; a perfect image counts as 100 dB, not infinity."""
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def loss_fn(kind: Loss, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MSE, or minus the mean per-image PSNR in dB (as 10 log10 MSE; 1e-5 caps a digit at 50 dB)."""
    if kind == "mse":
        return ((y - x) ** 2).mean()
    return (10 * torch.log10(((y - x) ** 2).mean(dim=1) + 1e-5)).mean()


def train(
    config: TrainConfig, train_x: torch.Tensor, test_x: torch.Tensor, device: torch.device
) -> tuple[CodecModel, list[dict[str, float]]]:
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    # Denormal floats (below 1.2e-38, e.g. a saturated sigmoid's gradient) flushed to zero: on some
    # CPUs they are many times slower. Added while chasing slow mlp24 epochs, which turned out to be
    # other jobs on the machine (it changed neither the speed nor the first epochs' numbers); kept
    # because the committed mlp24 weights were trained with it.
    torch.set_flush_denormal(True)
    model = build_model(config.arch, None if config.hidden is None else {"hidden": list(config.hidden)}).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps = config.epochs * math.ceil(len(train_x) / config.batch_size)
    scheduler = (
        torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps, pct_start=0.1)
        if config.schedule == "onecycle"
        else None
    )
    shuffle = torch.Generator().manual_seed(config.seed)
    train_x, test_x = train_x.to(device), test_x.to(device)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        total = 0.0
        order = torch.randperm(len(train_x), generator=shuffle).to(device)
        for idx in torch.split(order, config.batch_size):
            x = to_unit(train_x[idx])
            loss = loss_fn(config.loss, model(x), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.item() * len(idx)
        val = evaluate(model, test_x)
        row = {
            "epoch": epoch,
            "train_loss": total / len(train_x),
            "val_loss": val["mse"],
            "val_psnr_db": val["psnr_mean_db"],
            "seconds": time.perf_counter() - start,
        }
        history.append(row)
        log.info(
            "epoch %3d/%d  train %.5f  val %.5f  psnr %.2f dB  %.0fs",
            epoch, config.epochs, row["train_loss"], row["val_loss"], row["val_psnr_db"], row["seconds"],
        )  # fmt: skip
    return model, history


def write_pictures(
    out: Path, config: TrainConfig, history: list[dict[str, float]], model: CodecModel, test_x: torch.Tensor
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    if config.loss == "mse":
        ax.plot(epochs, [row["train_loss"] for row in history], label="train")
        ax.plot(epochs, [row["val_loss"] for row in history], label="validation (test set)")
        ax.set(xlabel="epoch", ylabel="MSE", yscale="log", title=f"{config.arch} autoencoder")
    else:  # the loss is -PSNR: plot PSNR, higher is better
        ax.plot(epochs, [-row["train_loss"] for row in history], label="train (with quantisation noise)")
        ax.plot(epochs, [row["val_psnr_db"] for row in history], label="validation (test set, rounded latents)")
        ax.set(xlabel="epoch", ylabel="mean PSNR (dB)", title=f"{config.arch} autoencoder")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png", dpi=100)
    plt.close(fig)

    n = min(10, len(test_x))
    with torch.inference_mode():
        originals = to_unit(test_x[:n]).cpu()
        recon = model.cpu()(originals)
    fig, axes = plt.subplots(2, n, figsize=(n, 2.2), squeeze=False)
    for i in range(n):
        for row, images in enumerate((originals, recon)):
            axes[row][i].imshow(images[i].reshape(28, 28).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row][i].axis("off")
    fig.suptitle("test digits (top) and their reconstructions from 24 bytes (bottom)", fontsize=8)
    fig.savefig(out / "reconstructions.png", dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = parse_args(argv)
    command = " ".join(["python -m app.training.train", shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    try:
        device = torch.device(pick_device(config.device))
        train_x, test_x, md5s = load_mnist(config.data_root, config.limit)
    except (DataError, StartupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log.info("training on %d digits, validating on %d, device %s", len(train_x), len(test_x), device)
    model, history = train(config, train_x, test_x, device)
    test = evaluate(model, test_x.to(device))
    metrics: dict[str, Any] = {
        "command": command,
        "arch": config.arch,
        "trained_at": utc_iso(),  # which version of a name is the newest (app.codec.codecs)
        "config": {**asdict(config), "out": str(config.out), "data_root": str(config.data_root)},
        "device": str(device),
        "torch": str(torch.__version__),
        "data_md5": md5s,
        "train_digits": len(train_x),
        "test_digits": len(test_x),
        "train_seconds": round(history[-1]["seconds"], 1),
        "epochs": history,
        "test": test,
    }
    config.out.mkdir(parents=True, exist_ok=True)
    metrics["model_id"] = save_checkpoint(config.out / f"{config.arch}.safetensors", model.cpu(), metadata=metrics)
    (config.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_pictures(config.out, config, history, model, test_x.cpu())
    log.info(
        "done in %.0fs: test MSE %.4f, mean PSNR %.2f dB (%.2f dB as served); model %s",
        metrics["train_seconds"], test["mse"], test["psnr_mean_db"], test["served_psnr_mean_db"], metrics["model_id"],
    )  # fmt: skip
    if not all(math.isfinite(v) for v in test.values()):
        print("error: training diverged (non-finite test metrics)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

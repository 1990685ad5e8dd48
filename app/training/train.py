"""Train an autoencoder: `python -m app.training.train [--arch NAME]`.

Each architecture has its own recipe (`RECIPES`); every flag overrides it.

- `mlp6` (the default) is the reference recipe, unchanged: 50 epochs, batch 64,
  Adam lr 5e-4 constant, MSE loss, seed 42.
- `mlp24`: 60 epochs, batch 64, Adam with a one-cycle schedule peaking at
  lr 2e-3, seed 42, and a loss that is minus the mean per-image PSNR (the mean
  of 10 log10(MSE) over the batch) rather than the MSE: the evaluation averages
  PSNR over digits, and the MSE under-weights the digits that are already good.
- `ec64` has its own command, `python -m app.training.train_ec` (a rate term,
  a learned prior and frequency tables); both run the one loop, `app.training.loop.fit`.

The loop calls the model's `forward`, which in training mode puts the model's own
stand-in for its rounding (noise, `CodecModel.quantize`) on the latents.

Pixels are b / 255 in [0, 1]; training uses MNIST's 60,000 training digits and
validates on its 10,000 test digits. The whole data set lives in memory as one
uint8 tensor; a batch is an index into it (per-sample PIL transforms through a
DataLoader cost far more than the model itself).

Writes into --out (default `model_weights` for mlp6, `model_weights/<arch>` for
the others): the checkpoint (`<arch>.safetensors`, app.codec.checkpoint), metrics.json (command, config, data
checksums, per-epoch losses, final test metrics) and two pictures.
"""

import argparse
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

from app.codec.codecs import pick_device
from app.codec.model import ARCH, ARCHITECTURES, CodecModel, build_model
from app.errors import DataError, StartupError
from app.training import loop
from app.training.quality import psnr_from_mse

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
        "--hidden", type=loop.widths, default=d.hidden, metavar="W1,W2,...",
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


@torch.inference_mode()
def evaluate(model: CodecModel, pixels: torch.Tensor, batch: int = 2000) -> dict[str, float]:
    """Test MSE, mean per-image PSNR, and the PSNR after the service's rounding to bytes.

    The model is in eval mode, so a quantised model's latents are rounded as on the wire.
    """
    model.eval()
    sq_errors, served_errors = [], []
    for chunk in torch.split(pixels, batch):
        x = loop.to_unit(chunk)
        y = model(x).x_hat
        sq_errors.append(((y - x) ** 2).mean(dim=1))
        served = loop.as_served(y)
        served_errors.append(((served - x) ** 2).mean(dim=1))
    mse_per_image = torch.cat(sq_errors).double()
    served_per_image = torch.cat(served_errors).double()
    return {
        "mse": mse_per_image.mean().item(),
        "psnr_mean_db": psnr_from_mse(mse_per_image).mean().item(),
        "served_psnr_mean_db": psnr_from_mse(served_per_image).mean().item(),
    }


def loss_fn(kind: Loss, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MSE, or minus the mean per-image PSNR in dB as the losses count it (`loop.loss_psnr`)."""
    if kind == "mse":
        return ((y - x) ** 2).mean()
    return -loop.loss_psnr(y, x).mean()


class AutoencoderObjective:
    """`mlp6` and `mlp24` in the one loop: the recipe's loss of `forward` (noise in training), a torch scheduler."""

    def __init__(
        self,
        config: TrainConfig,
        model: CodecModel,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        train_digits: int,
        test_x: torch.Tensor,
    ) -> None:
        self.config, self.model, self.scheduler = config, model, scheduler
        self.train_digits, self.test_x = train_digits, test_x
        self.total = 0.0
        self.start = time.perf_counter()

    def start_epoch(self, epoch: int, progress: float) -> None:
        self.total = 0.0

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        loss = loss_fn(self.config.loss, self.model(x).x_hat, x)
        self.total += loss.item() * len(x)
        return loss

    def lr(self, progress: float) -> float | None:
        return None  # the optimizer's constant, or the scheduler's

    def after_step(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def end_epoch(self, epoch: int, seen: int, done: bool) -> tuple[dict[str, Any], bool]:
        val = evaluate(self.model, self.test_x)
        row = {
            "epoch": epoch,
            "train_loss": self.total / self.train_digits,
            "val_loss": val["mse"],
            "val_psnr_db": val["psnr_mean_db"],
            "seconds": time.perf_counter() - self.start,
        }
        return row, False


def train(
    config: TrainConfig, train_x: torch.Tensor, test_x: torch.Tensor, device: torch.device
) -> tuple[CodecModel, list[dict[str, float]]]:
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
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
    objective = AutoencoderObjective(config, model, scheduler, len(train_x), test_x)
    # Denormal floats (below 1.2e-38, e.g. a saturated sigmoid's gradient) flushed to zero: on some
    # CPUs they are many times slower. Added while chasing slow mlp24 epochs, which turned out to be
    # other jobs on the machine (it changed neither the speed nor the first epochs' numbers); kept
    # because the committed mlp24 weights were trained with it.
    with loop.flush_denormals():
        history = loop.fit(model, optimizer, train_x, config.batch_size, shuffle, loop.Budget(config.epochs), objective)
    return model, history


def pictures(
    config: TrainConfig, history: list[dict[str, Any]], model: CodecModel, test_x: torch.Tensor
) -> loop.Pictures:
    epochs = [row["epoch"] for row in history]
    n = min(10, len(test_x))
    with torch.inference_mode():
        originals = loop.to_unit(test_x[:n]).cpu()
        decoded = model.cpu()(originals).x_hat
    if config.loss == "mse":
        curves = [
            loop.Curve("train", epochs, [row["train_loss"] for row in history]),
            loop.Curve("validation (test set)", epochs, [row["val_loss"] for row in history]),
        ]
    else:  # the loss is -PSNR: plot PSNR, higher is better
        curves = [
            loop.Curve("train (with quantisation noise)", epochs, [-row["train_loss"] for row in history]),
            loop.Curve("validation (test set, rounded latents)", epochs, [row["val_psnr_db"] for row in history]),
        ]
    return loop.Pictures(
        title=f"{config.arch} autoencoder",
        ylabel="MSE" if config.loss == "mse" else "mean PSNR (dB)",
        curves=curves,
        log_scale=config.loss == "mse",
        originals=originals.numpy(),
        decoded=decoded.numpy(),
        caption="test digits (top) and their reconstructions from 24 bytes (bottom)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = parse_args(argv)
    command = " ".join(["python -m app.training.train", shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    try:
        device = torch.device(pick_device(config.device))
        train_x, test_x, md5s = loop.load_mnist(config.data_root, config.limit)
    except (DataError, StartupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log.info("training on %d digits, validating on %d, device %s", len(train_x), len(test_x), device)
    model, history = train(config, train_x, test_x, device)
    test = evaluate(model, test_x.to(device))
    config_dict = asdict(config)
    metrics = loop.run_metrics(command, model, config_dict, str(device), md5s, (len(train_x), len(test_x)), history)
    metrics["test"] = test
    loop.finish(config.out, model.cpu(), metrics, pictures(config, history, model, test_x.cpu()))
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

"""The one training loop, and what every run shares: data, the loss's PSNR, pictures, metrics and the save.

nanoGPT's single `train.py` in spirit: one loop (`fit`) drives every architecture; what differs is the
architecture's configuration and objective, in `app.training.train` (`mlp6`, `mlp24`: their recipes) and
`app.training.train_ec` (`ec64`: the rate term, the prior, the frequency tables, the v2 options).

One epoch: the training digits in a fresh order drawn from the run's `shuffle` generator, in batches; per
batch, the objective's loss (it calls the model's `forward`), `zero_grad`, `backward`, the learning rate
the objective asks for (or the optimizer's own), `step`, then the objective's bookkeeping. After each
epoch the objective says what the epoch's row of metrics.json holds and whether to stop early. The
budget is epochs, or minutes of a clock (`Budget`).
"""

import argparse
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from app.codec.checkpoint import utc_iso
from app.codec.model import CodecModel, save_checkpoint
from app.training import data

log = logging.getLogger("app.training")

# Minus the loss's per-digit PSNR is 10 log10(MSE + LOSS_MSE_OFFSET): the offset caps a digit at 50 dB,
# so a digit already reconstructed well stops pulling (the gradient of log MSE grows as 1 / MSE). It is
# the loss's, not a measurement's: measured PSNR is `app.training.quality.psnr_from_mse`.
LOSS_MSE_OFFSET = 1e-5


def widths(text: str) -> tuple[int, ...]:
    """--hidden's "512,256": comma-separated positive layer widths (an argparse type)."""
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


def loss_psnr(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N,) each digit's PSNR in dB as the losses count it, capped near 50 dB (LOSS_MSE_OFFSET)."""
    return -10 * torch.log10(((y - x) ** 2).mean(dim=1) + LOSS_MSE_OFFSET)


def as_served(y: torch.Tensor) -> torch.Tensor:
    """Decoded pixels as the service sends them: clamped to [0, 1] and rounded to bytes, over 255."""
    return torch.round(y.clamp(0, 1) * 255) / 255


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Denormal floats flushed to zero for the block, and only for it: the flag is the CPU thread's, and
    what runs after training (the coded evaluation, the service in the same process) must not see it."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@dataclass(frozen=True)
class Budget:
    """How long a run trains: `epochs`, or with `minutes` that much of `clock` (the learning rate follows it)."""

    epochs: int
    minutes: float | None = None
    clock: Callable[[], float] = time.perf_counter
    start: float = field(default_factory=time.perf_counter)

    def progress(self, step: int, total_steps: int) -> float:
        if self.minutes is not None:
            return (self.clock() - self.start) / (60 * self.minutes)
        return step / total_steps

    def spent(self, step: int, total_steps: int) -> bool:
        return self.progress(step, total_steps) >= 1.0 if self.minutes is not None else step >= total_steps


class Objective(Protocol):
    """An architecture's part of the loop."""

    def start_epoch(self, epoch: int, progress: float) -> None: ...

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """One batch of (N, 784) pixels in [0, 1] -> the loss to minimise (the objective keeps its own sums)."""
        ...

    def lr(self, progress: float) -> float | None:
        """The learning rate for this step; None keeps the optimizer's (a constant, or a torch scheduler's)."""
        ...

    def after_step(self) -> None: ...

    def end_epoch(self, epoch: int, seen: int, done: bool) -> tuple[dict[str, Any], bool]:
        """The epoch's row for metrics.json, and whether to stop now."""
        ...


def fit(
    model: CodecModel,
    optimizer: torch.optim.Optimizer,
    train_x: torch.Tensor,
    batch_size: int,
    shuffle: torch.Generator,
    budget: Budget,
    objective: Objective,
) -> list[dict[str, Any]]:
    """Train `model` on the (N, 784) uint8 digits `train_x`; returns the epochs' rows."""
    total_steps = budget.epochs * math.ceil(len(train_x) / batch_size)
    history: list[dict[str, Any]] = []
    step, epoch, done = 0, 0, False
    while not done:
        epoch += 1
        model.train()
        objective.start_epoch(epoch, budget.progress(step, total_steps))
        order = torch.randperm(len(train_x), generator=shuffle).to(train_x.device)
        seen = 0
        for idx in torch.split(order, batch_size):
            loss = objective.loss(to_unit(train_x[idx]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
            lr = objective.lr(min(budget.progress(step, total_steps), 1.0))
            if lr is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr
            optimizer.step()
            objective.after_step()
            step += 1
            seen += len(idx)
            if budget.spent(step, total_steps):
                done = True
                break
        row, stop = objective.end_epoch(epoch, seen, done)
        done = done or stop
        history.append(row)
        log.info(
            "epoch %d %s", epoch, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        )
    return history


def run_metrics(
    command: str,
    model: CodecModel,
    config: dict[str, Any],
    device: str,
    md5s: dict[str, str],
    digits: tuple[int, int],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """What metrics.json (and the checkpoint's metadata) record of every run; each trainer adds its own."""
    return {
        "command": command,
        "arch": model.arch,
        "trained_at": utc_iso(),  # which version of a name is the newest (app.codec.codecs)
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in config.items()},
        "device": device,
        "torch": str(torch.__version__),
        "data_md5": md5s,
        "train_digits": digits[0],
        "test_digits": digits[1],
        "train_seconds": round(history[-1]["seconds"], 1),
        "epochs": history,
    }


@dataclass
class Curve:
    label: str
    epochs: list[int]
    values: list[float]
    style: str = "-"


@dataclass
class Pictures:
    """loss_curve.png (`curves` on the left axis, `twin` on a right one) and reconstructions.png."""

    title: str
    ylabel: str
    curves: list[Curve]
    originals: np.ndarray  # (n, 784) in [0, 1], the first test digits
    decoded: np.ndarray  # (n, 784) in [0, 1], as the run decodes them
    caption: str
    log_scale: bool = False
    twin: tuple[str, Curve] | None = None  # (its axis label, its curve)


def finish(out: Path, model: CodecModel, metrics: dict[str, Any], pictures: Pictures, save: bool = True) -> str:
    """Write the checkpoint (unless `save` is False), metrics.json and the pictures into `out`; the model id."""
    out.mkdir(parents=True, exist_ok=True)
    if save:
        metrics["model_id"] = save_checkpoint(out / f"{model.arch}.safetensors", model, metadata=metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_pictures(out, pictures)
    return str(metrics["model_id"])


def write_pictures(out: Path, pictures: Pictures) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for curve in pictures.curves:
        ax.plot(curve.epochs, curve.values, curve.style, label=curve.label)
    ax.set(xlabel="epoch", ylabel=pictures.ylabel, title=pictures.title)
    if pictures.log_scale:
        ax.set_yscale("log")
    if pictures.twin is not None:
        label, curve = pictures.twin
        twin = ax.twinx()
        twin.plot(curve.epochs, curve.values, color="gray", linestyle=":", label=curve.label)
        twin.set_ylabel(label)
        twin.legend(loc="center right", fontsize=8)
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png", dpi=100)
    plt.close(fig)

    n = len(pictures.originals)
    fig, axes = plt.subplots(2, n, figsize=(n, 2.2), squeeze=False)
    for i in range(n):
        for row, images in enumerate((pictures.originals, pictures.decoded)):
            axes[row][i].imshow(images[i].reshape(28, 28), cmap="gray", vmin=0, vmax=1)
            axes[row][i].axis("off")
    fig.suptitle(pictures.caption, fontsize=8)
    fig.savefig(out / "reconstructions.png", dpi=100)
    plt.close(fig)

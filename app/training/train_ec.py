"""Train the entropy-coded model `ec64`: `python -m app.training.train_ec`.

The recipe (every flag overrides it):

- the network: `EntropyCodedAutoencoder` (784-512-256-64, GELU with the tanh approximation,
  decoder the mirror image ending in a sigmoid) and its prior, per latent a mixture of three
  logistic distributions discretised to the integers;
- loss = -(mean per-image PSNR) + lam * (mean code length in bits under the prior)
  + penalty * mean(max(0, bits - cap)); lam starts at 0 and is adapted after every step,
  lam += 1e-5 * (batch mean bits - --target-bits), to hold the mean code length at 180
  bits; it may go negative (a reward for bits) where the cap alone would hold the rate
  lower. The cap (190 bits) keeps each digit's ideal code under the 192 bits of 24 bytes,
  with room for the coder's last bit and the tables' rounding; the rate control deals
  with the few digits over it;
- uniform noise in [-1/2, 1/2) stands in for the rounding in the first half of training,
  straight-through rounding (the decoder sees the integers, the gradient passes) after it;
- Adam, batch 128, one-cycle learning rate to 2e-3 (10% warm-up, cosine down); with
  --minutes the schedule follows the wall clock instead of the step count and training stops
  when the time is up (on a machine shared with other jobs, the epochs a budget buys vary);
- seed 42 for the weights, the shuffling and the noise; torch on one CPU thread by default.

The v2 research options, each off by default so the recipe above is unchanged (measured in
docs/ec64_v2_research.md): --shift and --elastic (`app.training.augment`), --ema, --weight-decay,
--val-digits and --patience (a split of the training digits picks the weights), --budget hinge
with --bit-reward and --prior-weight (`loss_of`), --hidden and --decoder-hidden, and --clock cpu
(--minutes counted in this process's CPU time, for equal budgets on a shared machine).

After training the prior is frozen into integer frequency tables (`build_tables`) and the
test digits go through the real coder (the numpy float64 engine, the rate control, the
arithmetic code, 24 bytes, the decoder): metrics.json records that PSNR, the distribution
of code lengths before padding and how many digits the rate control had to move.

Writes into --out (default model_weights/ec64): `ec64.safetensors`, metrics.json, loss_curve.png,
reconstructions.png, and every --eval-every epochs `state.pt` (weights and history so far,
which --from-state finishes without training). --code-bytes other than 24 trains the same
model for another budget (the rate-distortion curve; such a checkpoint is not served).
--dry-run: one epoch on 128 digits, for tests.
"""

import argparse
import itertools
import logging
import math
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from app.codec import arith, checkpoint
from app.codec.engine import make_engine
from app.codec.latent import ArithmeticCodedFormat
from app.codec.model import MIN_SCALE, EntropyCodedArgs, EntropyCodedAutoencoder, checkpoint_of, model_id
from app.errors import DataError
from app.training import augment, loop, quality
from app.training.quality import psnr_from_mse

log = logging.getLogger("app.training.train_ec")


@dataclass(frozen=True)
class ECConfig:
    epochs: int = 150
    minutes: float | None = None
    clock: str = "wall"
    batch_size: int = 128
    lr: float = 2e-3
    target_bits: float = 180.0
    cap_bits: float = 190.0
    penalty: float = 1.0
    code_bytes: int = 24
    latent_dim: int = 64
    mixtures: int = 3
    seed: int = 42
    limit: int | None = None
    eval_every: int = 10
    out: Path = Path("model_weights/ec64")
    data_root: Path = Path("data")
    threads: int = 1
    from_state: Path | None = None
    init_from: Path | None = None
    dry_run: bool = False
    # The v2 research options (app.training.augment, docs/ec64_v2_research.md); each default is v1's recipe.
    shift: int = 0
    elastic: float = 0.0
    elastic_sigma: float = 4.0
    ema: float = 0.0
    weight_decay: float = 0.0
    val_digits: int = 0
    patience: int | None = None
    budget: str = "mean"
    prior_weight: float | None = None  # None: 0 under the mean budget (v1), 1 under the hinge
    bit_reward: float = 0.0
    hidden: tuple[int, ...] = (512, 256)
    decoder_hidden: tuple[int, ...] | None = None


def parse_args(argv: Sequence[str] | None) -> ECConfig:
    d = ECConfig()
    p = argparse.ArgumentParser(prog="python -m app.training.train_ec", description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"passes over the data (default {d.epochs})")
    p.add_argument("--minutes", type=float, default=None, help="train for this wall time instead of --epochs")
    p.add_argument("--clock", choices=("wall", "cpu"), default=d.clock,
                   help="what --minutes counts: wall time (default) or this process's CPU time, which other jobs "
                   "on a shared machine do not eat into")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak Adam learning rate (default {d.lr})")
    p.add_argument("--target-bits", type=float, default=d.target_bits, help="mean code length to hold (default 180)")
    p.add_argument("--cap-bits", type=float, default=d.cap_bits, help="penalised above (default 190)")
    p.add_argument("--penalty", type=float, default=d.penalty, help="per bit over the cap (default 1)")
    p.add_argument("--code-bytes", type=int, default=d.code_bytes, help="the fixed code size (default 24)")
    p.add_argument("--latent-dim", type=int, default=d.latent_dim, help=f"default {d.latent_dim}")
    p.add_argument("--mixtures", type=int, default=d.mixtures, help="logistics per prior (default 3)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training and test digits")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="epochs between test evaluations")
    p.add_argument("--out", type=Path, default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--data-root", type=Path, default=d.data_root, help=f"MNIST root (default {d.data_root})")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (default 1)")
    p.add_argument("--from-state", type=Path, default=None, help="finish a state.pt of an earlier run, no training")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from a .safetensors checkpoint of the same widths, then train as usual")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="one epoch on 128 digits (for tests)")
    v2 = p.add_argument_group("v2 research options (each default keeps v1's recipe)")
    v2.add_argument(
        "--shift", type=int, default=d.shift, help="random whole-pixel shifts of up to N a side (default 0)"
    )
    v2.add_argument(
        "--elastic", type=float, default=d.elastic, help="elastic distortion strength in pixels (default 0)"
    )
    v2.add_argument("--elastic-sigma", type=float, default=d.elastic_sigma, help="its smoothing in pixels (default 4)")
    v2.add_argument("--ema", type=float, default=d.ema,
                    help="decay of an EMA of the weights, which is evaluated and saved (default 0: none)")  # fmt: skip
    v2.add_argument("--weight-decay", type=float, default=d.weight_decay,
                    help="AdamW's decoupled decay on the linear weights (default 0: plain Adam)")  # fmt: skip
    v2.add_argument("--val-digits", type=int, default=d.val_digits,
                    help="hold out the last N training digits, pick the best evaluation on them")  # fmt: skip
    v2.add_argument("--patience", type=int, default=None,
                    help="with --val-digits, stop after N evaluations without a better validation PSNR")  # fmt: skip
    v2.add_argument("--budget", choices=("mean", "hinge"), default=d.budget,
                    help="mean: hold the mean code length at --target-bits (v1); hinge: only --penalty per bit "
                    "over --cap-bits, so each digit spends its own bytes")  # fmt: skip
    v2.add_argument("--prior-weight", type=float, default=None,
                    help="weight of the prior's own fit to the latents "
                    "(default: 0 under --budget mean, 1 under hinge)")  # fmt: skip
    v2.add_argument("--bit-reward", type=float, default=d.bit_reward,
                    help="--budget hinge: minus this per bit a digit spends up to the cap, paid by the encoder "
                    "alone (default 0)")  # fmt: skip
    v2.add_argument(
        "--hidden", type=loop.widths, default=d.hidden, help="encoder widths, mirrored by the decoder (default 512,256)"
    )
    v2.add_argument("--decoder-hidden", type=loop.widths, default=None,
                    help="decoder widths from the latent up, when not the encoder's mirror (research only: "
                    "EntropyCodedArgs has one `hidden`, so such weights are not written as a checkpoint)")  # fmt: skip
    args = p.parse_args(argv)
    config = replace(d, **vars(args))
    if config.dry_run:
        config = replace(config, epochs=1, minutes=None, limit=min(config.limit or 128, 128), eval_every=1)
    if config.epochs < 1 or config.batch_size < 1 or config.threads < 1 or config.code_bytes < 1:
        p.error("--epochs, --batch-size, --threads and --code-bytes must be positive")
    if config.shift < 0 or config.elastic < 0 or config.elastic_sigma <= 0 or config.weight_decay < 0:
        p.error("--shift, --elastic and --weight-decay must be >= 0, --elastic-sigma > 0")
    if not 0 <= config.ema < 1:
        p.error("--ema must be in [0, 1)")
    if config.prior_weight is not None and config.prior_weight < 0:
        p.error("--prior-weight must be >= 0")
    if config.bit_reward < 0 or (config.bit_reward and config.budget != "hinge"):
        p.error("--bit-reward must be >= 0, and goes with --budget hinge (the mean budget has lam)")
    if config.val_digits < 0 or (config.patience is not None and (config.patience < 1 or not config.val_digits)):
        p.error("--val-digits must be >= 0; --patience needs --val-digits and must be positive")
    if config.decoder_hidden == config.hidden[::-1]:
        config = replace(config, decoder_hidden=None)  # the mirror image is the served architecture
    return config


def decoder_of(widths: list[int]) -> torch.nn.Sequential:
    """ec64's decoder layout (linear, GELU tanh between, sigmoid last) for other widths: --decoder-hidden."""
    layers: list[torch.nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        layers.append(torch.nn.Linear(n_in, n_out))
        layers.append(torch.nn.GELU(approximate="tanh") if i < len(widths) - 2 else torch.nn.Sigmoid())
    return torch.nn.Sequential(*layers)


def onecycle_lr(peak: float, progress: float) -> float:
    """torch's OneCycleLR (cosine, 10% warm-up from peak/25, down to peak/25/1e4) at progress in [0, 1]."""
    start, end = peak / 25, peak / 25 / 1e4
    if progress < 0.1:
        return start + (peak - start) * (1 - math.cos(math.pi * progress / 0.1)) / 2
    return end + (peak - end) * (1 + math.cos(math.pi * min(1.0, (progress - 0.1) / 0.9))) / 2


class WeightAverage:
    """An exponential moving average of a model's parameters (with the usual warm-up of the decay)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.params = [p.detach().clone() for p in model.parameters()]
        self.updates = 0

    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for average, p in zip(self.params, model.parameters(), strict=True):
                average.lerp_(p, 1 - decay)

    @contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """The average in the model for the block, the live weights back after it."""
        live = [p.detach().clone() for p in model.parameters()]
        copy_into(model, self.params)
        try:
            yield
        finally:
            copy_into(model, live)


def copy_into(model: torch.nn.Module, values: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(model.parameters(), values, strict=True):
            p.copy_(v)


def make_optimizer(config: ECConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """v1's Adam, or AdamW decaying only the linear layers' weights (not biases, not the prior)."""
    if config.weight_decay == 0:
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    decayed = [p for name, p in model.named_parameters() if name.startswith(("encoder.", "decoder.")) and p.ndim == 2]
    ids = {id(p) for p in decayed}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": decayed, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def loss_of(
    config: ECConfig, model: EntropyCodedAutoencoder, psnr: torch.Tensor, q: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss and each digit's code length, given its PSNR, its latents q (integers, or plus noise) and lam.

    mean: -mean PSNR + lam * mean bits + penalty * mean bits over the cap (v1, in v1's order of sums).
    hinge: -mean PSNR + the penalty alone, so a digit under the cap is free to spend bits on its PSNR.
    The hinge alone would teach the prior only from the digits over the cap, so the prior is also
    fitted to every latent (--prior-weight, 1 by default under the hinge): the bits of the detached
    latents, a gradient for the prior alone, which leaves the encoder's trade untouched. Under the
    mean budget v1 has no such term: there the prior learns from lam's term, which pushes it *away*
    from the latents whenever lam is negative (--prior-weight adds the fit there too).
    Measured, the hinge alone leaves digits well under the cap (nothing asks the encoder to spread its
    latents), so --bit-reward pays the encoder for each bit up to the cap, at a price the prior does
    not see (`encoder_bits`): a reward the prior could collect would teach it to fit worse.
    """
    bits = model.bits(q)
    over = config.penalty * F.relu(bits - config.cap_bits).mean()
    fit = config.prior_weight if config.prior_weight is not None else float(config.budget == "hinge")
    loss = -psnr.mean() + lam * bits.mean() + over if config.budget == "mean" else -psnr.mean() + over
    if config.bit_reward:
        loss = loss - config.bit_reward * torch.clamp(encoder_bits(model, q), max=config.cap_bits).mean()
    if fit:
        loss = loss + fit * model.bits(q.detach()).mean()
    return loss, bits.detach()


def encoder_bits(model: EntropyCodedAutoencoder, q: torch.Tensor) -> torch.Tensor:
    """`model.bits(q)` with the prior's parameters held fixed: its gradient reaches the latents only.

    The same formula as `EntropyCodedAutoencoder.likelihood` (a test holds them equal).
    """
    qe = q.unsqueeze(-1)
    means = model.prior_means.detach()
    scale = torch.exp(model.prior_log_scales.detach()).clamp_min(MIN_SCALE)
    upper = torch.sigmoid((qe + 0.5 - means) / scale)
    lower = torch.sigmoid((qe - 0.5 - means) / scale)
    weights = torch.softmax(model.prior_logits.detach(), dim=-1)
    mass = ((upper - lower) * weights).sum(-1).clamp_min(1e-9)
    bits: torch.Tensor = -torch.log2(mass).sum(dim=1)
    return bits


class EntropyCodedObjective:
    """`ec64` in the one loop: -PSNR + the rate terms (`loss_of`) of `forward`, noise then straight-through,
    lam adapted after every step, the one-cycle rate by progress, and the evaluations (EMA, validation)."""

    def __init__(
        self,
        config: ECConfig,
        model: EntropyCodedAutoencoder,
        optimizer: torch.optim.Optimizer,
        noise: torch.Generator,
        train_digits: int,
        test_x: torch.Tensor,
        val_x: torch.Tensor | None,
    ) -> None:
        self.config, self.model, self.optimizer, self.noise = config, model, optimizer, noise
        self.train_digits, self.test_x, self.val_x = train_digits, test_x, val_x
        self.average = WeightAverage(model, config.ema) if config.ema > 0 else None
        self.lam = 0.0
        self.best: tuple[float, int, list[torch.Tensor]] | None = None  # validation PSNR, epoch, the weights
        self.stale = 0
        self.history: list[dict[str, Any]] = []  # the rows so far, for state.pt
        self.wall_start, self.cpu_start = time.perf_counter(), time.process_time()
        self.straight_through = False
        self.psnr_sum = self.bits_sum = self.over = 0.0
        self.bits = torch.zeros(0)

    def start_epoch(self, epoch: int, progress: float) -> None:
        config = self.config
        self.straight_through = progress > 0.5 if config.minutes is not None else epoch > config.epochs // 2
        self.psnr_sum = self.bits_sum = self.over = 0.0

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        config = self.config
        x = augment.elastic(x, config.elastic, config.elastic_sigma, self.noise)
        x = augment.shift(x, config.shift, self.noise)
        y, q = self.model(x, "straight-through" if self.straight_through else "noise", self.noise)
        psnr = loop.loss_psnr(y, x)
        loss, self.bits = loss_of(config, self.model, psnr, q, self.lam)
        self.psnr_sum += psnr.sum().item()
        return loss

    def lr(self, progress: float) -> float:
        return onecycle_lr(self.config.lr, progress)

    def after_step(self) -> None:
        if self.average is not None:
            self.average.update(self.model)
        if self.config.budget == "mean":
            self.lam += 1e-5 * (self.bits.mean().item() - self.config.target_bits)
        self.bits_sum += self.bits.sum().item()
        self.over += (self.bits > self.config.cap_bits).sum().item()

    def end_epoch(self, epoch: int, seen: int, done: bool) -> tuple[dict[str, Any], bool]:
        config, model = self.config, self.model
        row: dict[str, Any] = {
            "epoch": epoch,
            "phase": "straight-through" if self.straight_through else "noise",
            "train_psnr_db": self.psnr_sum / seen,
            "train_bits": self.bits_sum / seen,
            "train_over_cap": self.over / seen,
            "lam": self.lam,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - self.wall_start,
            "cpu_seconds": time.process_time() - self.cpu_start,
        }
        if done and seen < self.train_digits:
            row["digits_this_epoch"] = seen
        stop = False
        if epoch % config.eval_every == 0 or done:
            with self.average.applied(model) if self.average is not None else nullcontext():
                row.update(ideal_metrics(model, self.test_x, 8 * config.code_bytes))
                if self.val_x is not None:
                    val = ideal_metrics(model, self.val_x, 8 * config.code_bytes)
                    row["val_psnr_db_rounded"], row["val_bits_mean"] = (
                        val["test_psnr_db_rounded"],
                        val["test_bits_mean"],
                    )
                    if self.best is None or row["val_psnr_db_rounded"] > self.best[0]:
                        weights = [p.detach().clone() for p in model.parameters()]
                        self.best, self.stale = (row["val_psnr_db_rounded"], epoch, weights), 0
                    else:
                        self.stale += 1
                config.out.mkdir(parents=True, exist_ok=True)
                torch.save({"state_dict": model.state_dict(), "history": [*self.history, row]}, config.out / "state.pt")
            if config.patience is not None and self.stale >= config.patience:
                row["stopped_early"] = True
                stop = True
        self.history.append(row)
        return row, stop


def train(
    config: ECConfig,
    model: EntropyCodedAutoencoder,
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    val_x: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    torch.manual_seed(config.seed)
    optimizer = make_optimizer(config, model)
    # One generator for the shuffling, the augmentations and the noise, in that order of draws.
    generator = torch.Generator().manual_seed(config.seed)
    objective = EntropyCodedObjective(config, model, optimizer, generator, len(train_x), test_x, val_x)
    clock = time.process_time if config.clock == "cpu" else time.perf_counter
    budget = loop.Budget(config.epochs, config.minutes, clock, clock())
    history = loop.fit(model, optimizer, train_x, config.batch_size, generator, budget, objective)
    # What is evaluated and saved: the validation's pick, else the average, else the last weights.
    if objective.best is not None:
        copy_into(model, objective.best[2])
        history[-1]["selected_epoch"] = objective.best[1]
    elif objective.average is not None:
        copy_into(model, objective.average.params)
    if objective.best is not None or objective.average is not None:
        torch.save({"state_dict": model.state_dict(), "history": history}, config.out / "state.pt")
    return history


@torch.inference_mode()
def ideal_metrics(model: EntropyCodedAutoencoder, test_x: torch.Tensor, budget: int) -> dict[str, float]:
    """Test PSNR with rounded latents and no rate control, and the ideal code lengths under the prior."""
    model.eval()
    x = loop.to_unit(test_x)
    y, q = model(x)  # eval mode: rounded latents
    served = loop.as_served(y)
    psnr = psnr_from_mse(((served.double() - x.double()) ** 2).mean(dim=1))
    bits = model.bits(q)
    return {
        "test_psnr_db_rounded": psnr.mean().item(),
        "test_bits_mean": bits.mean().item(),
        "test_bits_max": bits.max().item(),
        "test_over_budget": (bits > budget).double().mean().item(),
    }


def coded_metrics(
    model: EntropyCodedAutoencoder, test_x: torch.Tensor, code_bytes: int
) -> tuple[dict[str, Any], np.ndarray]:
    """Every test digit through the served path (numpy engine, rate control, coder, decoder)."""
    fmt = ArithmeticCodedFormat(model.frequency_tables(), code_bytes)
    engine = make_engine(checkpoint_of(model, {}), "cpu")
    pixels = test_x.numpy()
    z = engine.forward_encoder(pixels)
    before, sent, moved = [], [], []
    data = bytearray()
    start = time.perf_counter()
    for row in z:
        clamped = np.clip(fmt.symbols(row.astype(np.float64)), fmt.tables.lo, fmt.tables.hi)
        before.append(arith.encode_symbols(fmt.tables, clamped)[1])
        _q, m, k, steps = fmt.code(row)
        sent.append(k)
        moved.append(steps)
        data += arith.code_to_bytes(m, k, code_bytes)
    code_seconds = time.perf_counter() - start
    start = time.perf_counter()
    values = fmt.unpack_many(bytes(data))
    decode_seconds = time.perf_counter() - start
    decoded = engine.forward_decoder(values)
    psnr = quality.psnr_db(pixels.reshape(-1, 28, 28), decoded.reshape(-1, 28, 28))
    b, s, mv = np.array(before), np.array(sent), np.array(moved)
    budget = 8 * code_bytes
    return {
        "psnr_mean_db": float(psnr.mean()),
        "digits": len(pixels),
        "code_bytes": code_bytes,
        "code_bits_before_rate_control": _distribution(b) | {"over_budget": int((b > budget).sum())},
        "code_bits_sent": _distribution(s),
        "rate_control": {
            "digits_moved": int((mv > 0).sum()),
            "max_steps": int(mv.max()),
            "mean_steps": float(mv.mean()),
        },
        "all_mode_bits": arith.encode_symbols(fmt.tables, fmt.tables.mode)[1],
        "table_symbols": {"min": min(len(t) for t in fmt.tables.freqs), "max": max(len(t) for t in fmt.tables.freqs)},
        "coder_us_per_digit": {
            "encode_with_rate_control": 1e6 * code_seconds / len(pixels),
            "decode": 1e6 * decode_seconds / len(pixels),
        },
    }, decoded


def _distribution(values: np.ndarray) -> dict[str, Any]:
    return {
        "mean": float(values.mean()),
        "min": int(values.min()),
        "p1": float(np.percentile(values, 1)),
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "max": int(values.max()),
        "histogram_8bit_bins": {
            f"{lo}-{lo + 7}": int(((values >= lo) & (values < lo + 8)).sum())
            for lo in range(int(values.min()) // 8 * 8, int(values.max()) + 1, 8)
        },
    }


def pictures(
    history: list[dict[str, Any]], test_x: torch.Tensor, decoded: np.ndarray, code_bytes: int
) -> loop.Pictures:
    epochs = [row["epoch"] for row in history]
    evaluated = [row for row in history if "test_psnr_db_rounded" in row]
    n = min(10, len(test_x))
    return loop.Pictures(
        title=f"ec64 training, {code_bytes}-byte code",
        ylabel="mean PSNR (dB)",
        curves=[
            loop.Curve("train PSNR (noise, then rounding)", epochs, [row["train_psnr_db"] for row in history]),
            loop.Curve(
                "test PSNR (rounded latents)",
                [r["epoch"] for r in evaluated],
                [r["test_psnr_db_rounded"] for r in evaluated],
                "o-",
            ),
        ],
        twin=(
            "mean code length under the prior (bits)",
            loop.Curve("train bits", epochs, [row["train_bits"] for row in history]),
        ),
        originals=test_x[:n].numpy().reshape(n, -1) / 255,
        decoded=decoded[:n].reshape(n, -1) / 255,
        caption=f"ec64: test digits (top) and decoded from {code_bytes} coded bytes (bottom)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = parse_args(argv)
    command = " ".join(["python -m app.training.train_ec", shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    try:
        train_x, test_x, md5s = loop.load_mnist(config.data_root, config.limit)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    val_x = None
    if config.val_digits:
        if config.val_digits >= len(train_x):
            print(
                f"error: --val-digits {config.val_digits} leaves no training digits of {len(train_x)}", file=sys.stderr
            )
            return 2
        # the last N of the 60,000 training digits; the test digits stay unseen by any choice
        train_x, val_x = train_x[: -config.val_digits], train_x[-config.val_digits :]
    torch.manual_seed(config.seed)
    model = EntropyCodedAutoencoder(
        EntropyCodedArgs(
            hidden=config.hidden, latent_dim=config.latent_dim, mixtures=config.mixtures, code_bytes=config.code_bytes
        )
    )
    if config.decoder_hidden is not None:
        model.decoder = decoder_of([config.latent_dim, *config.decoder_hidden, model.args.in_dim])
    if config.init_from is not None:
        # A warm start: the trained weights and prior, not the frozen tables (build_tables makes new ones).
        start = checkpoint.read(config.init_from)
        weights = {k: torch.from_numpy(v.copy()) for k, v in start.tensors.items() if not k.startswith("table_")}
        model.load_state_dict(weights, strict=False)
        log.info("starting from %s (%s)", config.init_from, start.model_id)
    if config.from_state is not None:
        state = torch.load(config.from_state, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"], strict=False)  # the tables are built below
        history = list(state["history"])
        research_args = state.get("research_args")
        log.info("finishing %s: %d epochs trained", config.from_state, len(history))
    else:
        log.info("training on %d digits, validating on %d", len(train_x), len(test_x))
        torch.set_num_threads(config.threads)
        # Denormals flushed to zero while training (as app.training.train does, and the research run did), and
        # only then: the coded evaluation below must run as the service does.
        with loop.flush_denormals():
            history = train(config, model, train_x, test_x, val_x)
        research_args = None
    model.eval().requires_grad_(False)
    model.build_tables()
    coded, decoded = coded_metrics(model, test_x, config.code_bytes)
    metrics = loop.run_metrics(command, model, asdict(config), "cpu", md5s, (len(train_x), len(test_x)), history)
    metrics |= {
        "val_digits": 0 if val_x is None else len(val_x),
        # the gap: up to 10,000 training digits, undistorted, rounded latents, no rate control (as the epochs' test)
        "train_eval": {
            k.removeprefix("test_"): v for k, v in ideal_metrics(model, train_x[:10_000], 8 * config.code_bytes).items()
        },
        "epochs_trained": len(history),
        # --from-state: the arguments of the run that wrote the state, when it recorded them
        "trained_with": research_args,
        # as served: PNG in, rate control and code, 24 bytes, decoder, bytes out (PNG is lossless on them)
        "test": {"psnr_mean_db": coded["psnr_mean_db"], "served_psnr_mean_db": coded["psnr_mean_db"]},
        "coded": coded,
    }
    if config.decoder_hidden is not None:
        # EntropyCodedArgs rebuilds the decoder as the encoder's mirror, so a loader would refuse these weights.
        metrics["model_id"] = model_id(model.state_dict(), model.arch)
        metrics["checkpoint"] = "not written: --decoder-hidden needs a decoder width in EntropyCodedArgs"
    pictured = pictures(history, test_x, decoded, config.code_bytes)
    loop.finish(config.out, model, metrics, pictured, save=config.decoder_hidden is None)
    before = coded["code_bits_before_rate_control"]
    log.info(
        "done: %d epochs, %.0fs; coded test PSNR %.2f dB at %d bytes; code bits mean %.1f, max %d before rate "
        "control; %s",
        len(history), metrics["train_seconds"], coded["psnr_mean_db"], config.code_bytes, before["mean"],
        before["max"], metrics["model_id"],
    )  # fmt: skip
    return 0 if math.isfinite(coded["psnr_mean_db"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The ec64 trainer's v2 research options: each one's default is v1's recipe, and each does what it says."""

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from app.codec import checkpoint
from app.codec.model import EntropyCodedArgs, EntropyCodedAutoencoder, load_checkpoint
from app.training import augment, train_ec


def run(synthetic_mnist: Path, out: Path, *flags: str) -> dict[str, Any]:
    argv = ["--dry-run", "--out", str(out), "--data-root", str(synthetic_mnist), *flags]
    assert train_ec.main(argv) == 0
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return metrics


def test_v1_recipe_is_the_default() -> None:
    config = train_ec.parse_args([])
    v1 = {"shift": 0, "elastic": 0.0, "ema": 0.0, "weight_decay": 0.0, "val_digits": 0, "patience": None}
    assert {k: getattr(config, k) for k in v1} == v1
    assert (config.budget, config.hidden, config.decoder_hidden, config.clock) == ("mean", (512, 256), None, "wall")
    assert config.hidden == EntropyCodedArgs().hidden


def test_the_defaults_spelt_out_train_the_same_weights(synthetic_mnist: Path, tmp_path: Path) -> None:
    plain = run(synthetic_mnist, tmp_path / "plain")
    spelt = run(
        synthetic_mnist,
        tmp_path / "spelt",
        *("--shift", "0", "--elastic", "0", "--ema", "0", "--weight-decay", "0", "--val-digits", "0"),
        *(
            "--budget",
            "mean",
            "--prior-weight",
            "0",
            "--hidden",
            "512,256",
            "--decoder-hidden",
            "256,512",
            "--clock",
            "wall",
        ),
    )
    assert spelt["model_id"] == plain["model_id"]
    assert checkpoint.read(tmp_path / "plain" / "ec64.safetensors").trained_at == plain["trained_at"] is not None
    shifted = run(synthetic_mnist, tmp_path / "shifted", "--shift", "1")
    assert shifted["model_id"] != plain["model_id"]  # the option reaches the training


@pytest.mark.parametrize("pixels", [1, 2])
def test_shift_moves_each_digit_by_whole_pixels_within_the_range(pixels: int) -> None:
    x = torch.zeros(400, 28, 28)
    x[:, 14, 10] = 1.0  # one lit pixel, far from every edge
    moved = augment.shift(x.reshape(400, 784), pixels, torch.Generator().manual_seed(0)).reshape(400, 28, 28)
    assert torch.equal(moved.sum(dim=(1, 2)), torch.ones(400))  # nothing lost, nothing blurred
    where = moved.flatten(1).argmax(dim=1)
    offsets = {(int(i) // 28 - 14, int(i) % 28 - 10) for i in where}
    span = range(-pixels, pixels + 1)
    assert offsets == {(dy, dx) for dy in span for dx in span}  # every offset drawn, none beyond


def test_shift_zero_is_the_identity() -> None:
    x = torch.rand(3, 784)
    assert augment.shift(x, 0, torch.Generator()) is x


def test_elastic_is_a_small_smooth_warp_fixed_by_the_seed() -> None:
    x = torch.zeros(8, 28, 28)
    x[:, 8:20, 12:16] = 1.0  # a bar, like a "1"
    flat = x.reshape(8, 784)
    warped = augment.elastic(flat, 8.0, 4.0, torch.Generator().manual_seed(1))
    again = augment.elastic(flat, 8.0, 4.0, torch.Generator().manual_seed(1))
    assert torch.equal(warped, again) and warped.shape == flat.shape
    assert warped.min() >= 0 and warped.max() <= 1
    changed = (warped - flat).abs().sum(dim=1)
    assert (changed > 0.5).all()  # every digit moved
    assert ((warped.sum(dim=1) - flat.sum(dim=1)).abs() < 0.25 * flat.sum(dim=1)).all()  # ink roughly kept
    assert augment.elastic(flat, 0.0, 4.0, torch.Generator()) is flat


def test_weight_average_follows_the_weights_with_its_decay() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = train_ec.WeightAverage(model, decay=0.5)
    expected = 0.0
    for k in range(1, 6):
        with torch.no_grad():
            model.weight.fill_(float(k))
        average.update(model)
        decay = min(0.5, (1 + k) / (10 + k))
        expected = decay * expected + (1 - decay) * k
    assert average.params[0].item() == pytest.approx(expected)
    with average.applied(model):
        assert model.weight.item() == pytest.approx(expected)
    assert model.weight.item() == 5.0  # the live weights are back


def test_ema_run_saves_the_average(synthetic_mnist: Path, tmp_path: Path) -> None:
    plain = run(synthetic_mnist, tmp_path / "plain")
    averaged = run(synthetic_mnist, tmp_path / "ema", "--ema", "0.9")
    assert averaged["model_id"] != plain["model_id"]
    state = torch.load(tmp_path / "ema" / "state.pt", weights_only=True)["state_dict"]
    saved = load_checkpoint(tmp_path / "ema" / "ec64.safetensors").model.state_dict()
    assert torch.equal(state["encoder.0.weight"], saved["encoder.0.weight"])  # --from-state finishes the average


def test_weight_decay_touches_only_the_linear_weights() -> None:
    model = EntropyCodedAutoencoder(EntropyCodedArgs(hidden=(8,)))
    config = dataclasses.replace(train_ec.ECConfig(), weight_decay=0.01)
    optimizer = train_ec.make_optimizer(config, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in decayed}
    assert names == {"encoder.0.weight", "encoder.2.weight", "decoder.0.weight", "decoder.2.weight"}
    assert isinstance(train_ec.make_optimizer(train_ec.ECConfig(), model), torch.optim.Adam)


def test_validation_split_comes_from_the_training_digits(synthetic_mnist: Path, tmp_path: Path) -> None:
    metrics = run(synthetic_mnist, tmp_path / "val", "--val-digits", "32")
    assert (metrics["train_digits"], metrics["val_digits"], metrics["test_digits"]) == (64, 32, 32)
    last = metrics["epochs"][-1]
    assert "val_psnr_db_rounded" in last and last["selected_epoch"] == 1


def test_patience_stops_the_run(synthetic_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "stop"
    argv = ["--epochs", "50", "--limit", "64", "--val-digits", "16", "--eval-every", "1", "--patience", "1"]
    assert train_ec.main([*argv, "--hidden", "16", "--out", str(out), "--data-root", str(synthetic_mnist)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = metrics["epochs"]
    assert epochs[-1].get("stopped_early") and len(epochs) < 50
    scores = [row["val_psnr_db_rounded"] for row in epochs]
    assert epochs[-1]["selected_epoch"] == 1 + scores.index(max(scores))


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(["--val-digits", "96"], id="no-training-digits-left"),
        pytest.param(["--patience", "2"], id="patience-without-validation"),
        pytest.param(["--ema", "1"], id="ema-of-one"),
        pytest.param(["--shift", "-1"], id="negative-shift"),
        pytest.param(["--prior-weight", "-1"], id="negative-prior-weight"),
        pytest.param(["--bit-reward", "0.01"], id="bit-reward-without-hinge"),
        pytest.param(["--hidden", "512,x"], id="bad-widths"),
    ],
)
def test_bad_research_flags_are_refused(synthetic_mnist: Path, tmp_path: Path, bad: list[str]) -> None:
    try:
        code = train_ec.main(["--dry-run", "--out", str(tmp_path), "--data-root", str(synthetic_mnist), *bad])
    except SystemExit as exc:  # argparse's refusal
        code = int(str(exc.code))
    assert code == 2 and not (tmp_path / "metrics.json").exists()


def test_hinge_charges_only_bits_over_the_cap_to_the_encoder() -> None:
    torch.manual_seed(0)
    model = EntropyCodedAutoencoder(EntropyCodedArgs(hidden=(8,)))
    q = (torch.randn(4, 64) * 3).round().requires_grad_(True)
    config = dataclasses.replace(train_ec.ECConfig(), budget="hinge", cap_bits=1e6)  # every digit under the cap
    loss, bits = train_ec.loss_of(config, model, torch.zeros(4), q, lam=5.0)
    loss.backward()  # type: ignore[no-untyped-call]
    assert q.grad is not None and torch.count_nonzero(q.grad) == 0  # no price on bits below the cap, lam ignored
    assert model.prior_means.grad is not None and model.prior_means.grad.abs().sum() > 0  # the prior still fits
    assert torch.allclose(bits, model.bits(q))

    q.grad = None
    mean = dataclasses.replace(config, budget="mean")
    train_ec.loss_of(mean, model, torch.zeros(4), q, lam=5.0)[0].backward()  # type: ignore[no-untyped-call]
    assert q.grad is not None and torch.count_nonzero(q.grad) > 0  # v1: lam prices every bit


def test_prior_weight_fits_the_prior_under_the_mean_budget_too() -> None:
    torch.manual_seed(0)
    model = EntropyCodedAutoencoder(EntropyCodedArgs(hidden=(8,)))
    q = (torch.randn(4, 64) * 3).round().requires_grad_(True)
    v1 = dataclasses.replace(train_ec.ECConfig(), cap_bits=1e6)
    train_ec.loss_of(v1, model, torch.zeros(4), q, lam=0.0)[0].backward()  # type: ignore[no-untyped-call]
    assert model.prior_means.grad is not None and model.prior_means.grad.abs().sum() == 0  # v1: lam alone
    model.zero_grad()
    fitted = dataclasses.replace(v1, prior_weight=1.0)
    train_ec.loss_of(fitted, model, torch.zeros(4), q, lam=0.0)[0].backward()  # type: ignore[no-untyped-call]
    assert model.prior_means.grad.abs().sum() > 0
    assert q.grad is not None and torch.count_nonzero(q.grad) == 0  # the fit leaves the encoder alone


def test_bit_reward_pays_the_encoder_up_to_the_cap_and_leaves_the_prior_alone() -> None:
    torch.manual_seed(0)
    model = EntropyCodedAutoencoder(EntropyCodedArgs(hidden=(8,)))
    q = (torch.randn(4, 64) * 3).round().requires_grad_(True)
    assert torch.allclose(train_ec.encoder_bits(model, q), model.bits(q))
    config = dataclasses.replace(train_ec.ECConfig(), budget="hinge", cap_bits=1e6, prior_weight=0.0, bit_reward=0.1)
    train_ec.loss_of(config, model, torch.zeros(4), q, lam=0.0)[0].backward()  # type: ignore[no-untyped-call]
    assert q.grad is not None and torch.count_nonzero(q.grad) > 0  # the encoder is paid for bits
    assert model.prior_means.grad is None or model.prior_means.grad.abs().sum() == 0  # the prior is not
    q.grad = None
    reward_only = dataclasses.replace(config, cap_bits=1.0, penalty=0.0)  # every digit over the cap: no reward
    train_ec.loss_of(reward_only, model, torch.zeros(4), q, lam=0.0)[0].backward()  # type: ignore[no-untyped-call]
    assert torch.count_nonzero(q.grad) == 0


def test_hinge_run_keeps_lam_at_zero(synthetic_mnist: Path, tmp_path: Path) -> None:
    metrics = run(synthetic_mnist, tmp_path / "hinge", "--budget", "hinge")
    assert all(row["lam"] == 0.0 for row in metrics["epochs"])
    assert metrics["coded"]["code_bits_sent"]["max"] <= 192


def test_hidden_widths_make_a_servable_checkpoint(synthetic_mnist: Path, tmp_path: Path) -> None:
    metrics = run(synthetic_mnist, tmp_path / "narrow", "--hidden", "64,32")
    loaded = load_checkpoint(tmp_path / "narrow" / "ec64.safetensors")
    assert loaded.model_id == metrics["model_id"]
    assert loaded.model.state_dict()["encoder.0.weight"].shape == (64, 784)


def test_a_wider_decoder_trains_and_is_coded_but_writes_no_checkpoint(synthetic_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "wide"
    metrics = run(synthetic_mnist, out, "--hidden", "64,32", "--decoder-hidden", "48,96")
    assert not (out / "ec64.safetensors").exists() and "not written" in metrics["checkpoint"]
    assert metrics["coded"]["digits"] == 32 and metrics["coded"]["code_bits_sent"]["max"] <= 192
    state = torch.load(out / "state.pt", weights_only=True)["state_dict"]
    assert state["decoder.0.weight"].shape == (48, 64) and state["decoder.4.weight"].shape == (784, 96)


def test_train_psnr_is_measured_for_the_gap(synthetic_mnist: Path, tmp_path: Path) -> None:
    metrics = run(synthetic_mnist, tmp_path / "gap")
    assert metrics["train_eval"]["psnr_db_rounded"] > 0


def test_cpu_clock_is_accepted() -> None:
    assert train_ec.parse_args(["--minutes", "1", "--clock", "cpu"]).clock == "cpu"

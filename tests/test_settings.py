"""Settings are an operator's contract: a renamed setting's old environment variable keeps working."""

import pytest

from app.settings import Settings

# (the setting's name now, its environment variable now, the one it had before, a value that is not the default)
RENAMED = [
    pytest.param("microbatching", "MNIST_CODEC_MICROBATCHING", "MNIST_CODEC_BATCHING", "on", id="microbatching"),
    pytest.param(
        "microbatch_max_size", "MNIST_CODEC_MICROBATCH_MAX_SIZE", "MNIST_CODEC_BATCH_MAX_SIZE", 8, id="max-size"
    ),
    pytest.param(
        "microbatch_max_wait_us",
        "MNIST_CODEC_MICROBATCH_MAX_WAIT_US",
        "MNIST_CODEC_BATCH_MAX_WAIT_US",
        2000,
        id="max-wait",
    ),
]


@pytest.mark.parametrize(("name", "new", "old", "value"), RENAMED)
def test_a_renamed_settings_old_variable_still_sets_it(
    monkeypatch: pytest.MonkeyPatch, name: str, new: str, old: str, value: object
) -> None:
    default = Settings.model_fields[name].default
    assert value != default
    monkeypatch.delenv(new, raising=False)
    monkeypatch.setenv(old, str(value))
    assert getattr(Settings(), name) == value


@pytest.mark.parametrize(("name", "new", "old", "value"), RENAMED)
def test_the_new_variable_sets_it_and_wins_over_the_old(
    monkeypatch: pytest.MonkeyPatch, name: str, new: str, old: str, value: object
) -> None:
    monkeypatch.setenv(new, str(value))
    assert getattr(Settings(), name) == value
    default = Settings.model_fields[name].default
    monkeypatch.setenv(old, str(default))
    assert getattr(Settings(), name) == value


@pytest.mark.parametrize(("name", "new", "old", "value"), RENAMED)
def test_in_code_a_setting_goes_by_its_name(name: str, new: str, old: str, value: object) -> None:
    assert getattr(Settings(**{name: value}), name) == value


def test_a_variable_without_the_prefix_sets_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROBATCH_MAX_SIZE", "3")
    monkeypatch.setenv("BATCH_MAX_SIZE", "3")
    assert Settings().microbatch_max_size == Settings.model_fields["microbatch_max_size"].default

"""Service settings, read once from the environment (prefix MNIST_CODEC_).

The environment variables are an operator's contract: a setting that is renamed keeps its old
variable working beside the new one (`renamed`; the new one wins when both are set), and
tests/test_settings.py says so.
"""

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's cpuset, taskset), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


PREFIX = "MNIST_CODEC_"


def renamed(name: str, *old: str) -> AliasChoices:
    """The environment variables of a setting now called `name` that was called `old` before."""
    return AliasChoices(*(PREFIX + n.upper() for n in (name, *old)))


class Settings(BaseSettings):
    # populate_by_name: Settings(microbatching="on") in code; the aliases are the environment's names.
    model_config = SettingsConfigDict(env_prefix=PREFIX, populate_by_name=True)

    weights: Path = Field(
        default=Path("model_weights/mlp6.safetensors"),
        description="Checkpoint of the default model; a relative path is taken from the working directory.",
    )
    models: list[Path] = Field(
        default=[
            Path("model_weights/mlp24/mlp24.safetensors"),
            Path("model_weights/ec64/ec64.safetensors"),  # ec64 v1, ec64-ea9647b7fd42: its latents decode forever
            Path("model_weights/ec64/v2/ec64.safetensors"),  # ec64 v2, ec64-360fddf1aed9: what `ec64` means
        ],
        description=(
            "More checkpoints served next to `weights`, as a JSON list; a request picks one with "
            "?model=NAME, NAME being its architecture (mlp6, mlp24, ec64), or ?model=MODEL_ID for one version. "
            "Several versions of one name may be listed (see `default_versions`). '[]' serves `weights` only."
        ),
    )
    default_model: str | None = Field(
        default=None,
        description="Name of the model used when a request names none; unset: the one in `weights`.",
    )
    default_versions: str = Field(
        default="",
        description=(
            "Which version each name means, as comma-separated NAME=MODEL_ID pairs "
            "(e.g. 'ec64=ec64-ea9647b7fd42'); a name not listed means its newest version (by trained_at)."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="'auto' picks CUDA when it is available, else the CPU."
    )
    max_upload_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest request body accepted; larger ones get 413."
    )
    max_batch_items: int = Field(default=10_000, gt=0, description="Most digits or latents in one batch request.")
    max_batch_bytes: int = Field(
        default=16 * 1024 * 1024, gt=0, description="Largest body of a batch request; larger ones get 413."
    )
    batch_workers: int = Field(
        default=1,
        gt=0,
        description="Batch requests worked on at once, each in a worker thread off the event loop; more wait.",
    )
    max_search_work: int = Field(
        default=200_000,
        gt=0,
        description=(
            "Most search work one encode request may ask for: its digits x the cost of its effort level "
            "(decoder evaluations per digit, GET /models); more gets 413. Level 0 is not counted."
        ),
    )
    search_threads: int = Field(
        default_factory=usable_cpus,
        gt=0,
        description="Worker threads for searches (effort above 0); default: the CPUs this process may use.",
    )
    # Micro-batching (app.codec.microbatch) of concurrent single requests; not the batch endpoints (max_batch_*).
    microbatching: Literal["auto", "on", "off"] = Field(
        default="auto",
        validation_alias=renamed("microbatching", "batching"),
        description="Micro-batch concurrent single requests; 'auto' is on for CUDA, off on the CPU.",
    )
    microbatch_max_size: int = Field(
        default=64,
        gt=0,
        validation_alias=renamed("microbatch_max_size", "batch_max_size"),
        description="Most requests in one micro-batch.",
    )
    microbatch_max_wait_us: int = Field(
        default=500,
        ge=0,
        validation_alias=renamed("microbatch_max_wait_us", "batch_max_wait_us"),
        description="Longest a request waits for others to share its micro-batch.",
    )
    max_concurrency: int = Field(
        default=512, gt=0, description="Requests in progress at once; more get 503 with Retry-After."
    )

    body_timeout_s: float = Field(
        default=30, gt=0, description="Longest wait for a request's whole body; past it, 408 and the connection closed."
    )
    header_timeout_s: float = Field(
        default=10,
        gt=0,
        description="Longest wait for a request's head (line and header fields); past it, 408 and close.",
    )
    max_header_bytes: int = Field(
        default=16 * 1024, gt=0, description="Largest request head (request line and header fields); more gets 431."
    )
    max_header_fields: int = Field(default=100, gt=0, description="Most header fields in one request; more get 431.")
    max_connections: int = Field(
        default=10_000, gt=0, description="Most open connections; one more is closed as soon as it is accepted."
    )

    def checkpoints(self) -> list[Path]:
        """Every checkpoint to serve: `weights` first, then `models`, each once."""
        return list(dict.fromkeys([self.weights, *self.models]))


@lru_cache
def get_settings() -> Settings:
    return Settings()

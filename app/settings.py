"""Service settings, read once from the environment (prefix MNIST_CODEC_)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MNIST_CODEC_")

    weights: Path = Field(
        default=Path("model_weights/mlp6.pt"),
        description="Checkpoint to serve; a relative path is taken from the working directory.",
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
    batching: Literal["auto", "on", "off"] = Field(
        default="auto", description="Micro-batch concurrent single requests; 'auto' is on for CUDA, off on the CPU."
    )
    batch_max_size: int = Field(default=64, gt=0, description="Most requests in one micro-batch.")
    batch_max_wait_us: int = Field(
        default=500, ge=0, description="Longest a request waits for others to share its micro-batch."
    )
    max_concurrency: int = Field(
        default=512, gt=0, description="Requests in progress at once; more get 503 with Retry-After."
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()

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
    max_concurrency: int = Field(
        default=512, gt=0, description="Requests in progress at once; more get 503 with Retry-After."
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()

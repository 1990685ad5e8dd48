"""JSON bodies the service answers with, as pydantic models (so /docs shows them)."""

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    detail: str = Field(description="What was wrong, in words.")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    model_id: str
    device: str


class LatentFormatInfo(BaseModel):
    name: str = Field(description='Format name, e.g. "6xf32le".')
    bytes: int = Field(description="Size of one latent in bytes.")
    dtype: str = Field(description='numpy dtype of one value, e.g. "<f4".')
    dims: int = Field(description="Number of values in one latent.")


class ModelInfo(BaseModel):
    name: str
    id: str = Field(description="Name + first 12 hex digits of the weights' SHA-256; sent as X-Model-Id.")
    default: bool
    device: str
    latent_format: LatentFormatInfo
    test_psnr_db: float | None = Field(
        description="Mean per-image PSNR on the MNIST test set, latents and pixels rounded as served."
    )
    test_metrics: dict[str, float] = Field(description="Final test-set metrics recorded by training.")


class ModelList(BaseModel):
    default: str
    models: list[ModelInfo]

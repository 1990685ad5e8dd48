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
    dtype: str | None = Field(
        description='numpy dtype that reads a latent\'s bytes as its values, e.g. "<f4" '
        "(numpy.fromfile); null when the bytes are a code (coded: true)."
    )
    dims: int = Field(description="Number of values in one latent: the symbols the decoder takes.")
    coded: bool = Field(
        description="True when the bytes are an entropy code of the values, which only the model's own "
        "frequency tables decode (24xac), rather than the values end to end."
    )
    symbol_dtype: str = Field(
        description='numpy dtype of one value as sent: "<f4" float32, "|u1" a byte (value = byte / 255), '
        '"<i8" an integer (24xac).'
    )


class EffortInfo(BaseModel):
    level: int = Field(description="The value of ?effort= that picks it; 0 is the encoder's single pass.")
    psnr_db: float | None = Field(
        description="Mean per-image PSNR on the 10,000 MNIST test digits as served at this level (null: not measured)."
    )
    us_per_digit: float | None = Field(
        description="Microseconds to encode one digit alone at this level, on one CPU core (null: not measured)."
    )
    cost: int = Field(
        description="Search work per digit (decoder evaluations): a request may ask for digits x cost up to "
        "the server's max_search_work."
    )


class ModelInfo(BaseModel):
    """One version: a checkpoint of a model, known by its id."""

    name: str = Field(description="The model's name (its architecture): ?model=NAME means the `current` version.")
    id: str = Field(
        description="Name + first 12 hex digits of the weights' SHA-256; sent as X-Model-Id; ?model=ID means it."
    )
    trained_at: str | None = Field(
        description="When the weights were made, ISO-8601 UTC (null: the checkpoint does not say; sorts oldest)."
    )
    current: bool = Field(
        description="Whether ?model=NAME means this version: the newest by trained_at, or the one the server pins "
        "(MNIST_CODEC_DEFAULT_VERSIONS)."
    )
    default: bool = Field(description="Whether a request that names no model gets this version.")
    device: str
    latent_format: LatentFormatInfo
    test_psnr_db: float | None = Field(
        description="Mean per-image PSNR on the MNIST test set, latents and pixels rounded as served."
    )
    test_metrics: dict[str, float] = Field(description="Final test-set metrics recorded by training.")
    efforts: list[EffortInfo] = Field(description="The encode effort levels, 0 first (?effort= on /encode).")
    default_effort: int = Field(description="The level used when a request gives no ?effort=.")


class ModelList(BaseModel):
    default: str = Field(description="The model (name) used when a request names none.")
    default_id: str = Field(description="The version that name means.")
    names: dict[str, str] = Field(description="Each model name -> the id of the version ?model=NAME means.")
    models: list[ModelInfo] = Field(description="Every version served, in the server's settings order.")
    max_search_work: int = Field(
        description="Most search work one encode request may ask for: its digits x the cost of its effort level "
        "(levels above 0 only); more is a 413."
    )

"""What the server holds and whether it serves: GET /models, /healthz and /readyz."""

from fastapi import APIRouter, Request

from app.codec.codecs import Codec, Codecs
from app.service.checks import loaded_codecs
from app.service.openapi import error_responses
from app.service.schemas import EffortInfo, Health, LatentFormatInfo, ModelInfo, ModelList, Ready

router = APIRouter()


def describe(codec: Codec, codecs: Codecs) -> ModelInfo:
    test = codec.metadata.get("test", {})
    fmt = codec.format
    return ModelInfo(
        name=codec.name,
        id=codec.model_id,
        trained_at=codec.trained_at,
        current=codecs.means(codec),
        default=codec is codecs.default,
        device=str(codec.device),
        latent_format=LatentFormatInfo(
            name=fmt.name,
            bytes=fmt.nbytes,
            dtype=None if fmt.wire_dtype is None else fmt.wire_dtype.str,
            dims=fmt.dims,
            coded=fmt.wire_dtype is None,
            symbol_dtype=fmt.symbol_dtype.str,
        ),
        test_psnr_db=test.get("served_psnr_mean_db"),
        test_metrics={k: float(v) for k, v in test.items() if isinstance(v, int | float)},
        efforts=[
            EffortInfo(level=e.level, psnr_db=e.psnr_db, us_per_digit=e.us_per_digit, cost=e.cost)
            for e in codec.efforts
        ],
        default_effort=codec.default_effort,
    )


@router.get("/models", summary="The models this server holds, every version", responses=error_responses(503))
async def models(request: Request) -> ModelList:
    codecs = loaded_codecs(request)
    return ModelList(
        default=codecs.default_name,
        default_id=codecs.default.model_id,
        names={name: codec.model_id for name, codec in codecs.by_name.items()},
        models=[describe(c, codecs) for c in codecs],
        max_search_work=request.app.state.settings.max_search_work,
    )


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", summary="The model is loaded and requests are served", responses=error_responses(503))
async def readyz(request: Request) -> Ready:
    codec = loaded_codecs(request).default
    return Ready(status="ready", model_id=codec.model_id, device=str(codec.device))

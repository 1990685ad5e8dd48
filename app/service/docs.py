"""What /openapi.json can say once the models are loaded, so that generated clients and fuzzers
send requests that reach the codec: `model` as an enum of the served names, /decode's
latent as exactly `latent.LATENT_BYTES` bytes (raw, or the multipart field `latent`), and
real examples: the default model's name and id, and a digit PNG the server serves itself
(`EXAMPLE_PNG`, the `externalValue` of the PNG uploads: JSON cannot hold its bytes).
"""

from typing import Any

from fastapi import FastAPI

from app.codec import latent
from app.codec.codecs import Codecs
from app.service.effort import describe_efforts
from app.service.openapi import FORM, OCTET_STREAM

MODEL_NAME = "ModelName"  # the components schema every `model` parameter refers to
DECODE_PATH = "/decode"
EXAMPLE_PNG = "/static/example-7.png"  # app/service/static/example-7.png: a 28x28 MNIST test digit 7
PNG_UPLOADS = ("/encode", "/encode/batch")


def describe_models(schema: dict[str, Any], codecs: Codecs) -> None:
    """Point every `?model=` parameter at one enum of the served names and model ids; bound /decode's latent
    to its size."""
    names = [*codecs.names(), *(codec.model_id for codec in codecs)]
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas[MODEL_NAME] = {
        "title": MODEL_NAME,
        "type": "string",
        "enum": names,
        "description": f"A model this server holds (GET /models): a name means its current version, a model id "
        f"exactly that version; {codecs.default_name} when absent.",
    }
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == "model" and parameter.get("in") == "query":
                    parameter["schema"] = {"$ref": f"#/components/schemas/{MODEL_NAME}"}
                    parameter["example"] = codecs.default_name
                elif parameter.get("name") == "X-Model-Id" and parameter.get("in") == "header":
                    parameter["example"] = codecs.default.model_id
    for path in PNG_UPLOADS:
        form = schema.get("paths", {}).get(path, {}).get("post", {}).get("requestBody", {}).get("content", {})
        if FORM in form:
            form[FORM]["examples"] = {
                "digit-7": {
                    "summary": f"the file field img: a 28x28 MNIST digit 7, GET {EXAMPLE_PNG}",
                    "externalValue": EXAMPLE_PNG,
                }
            }
    body = schema.get("paths", {}).get(DECODE_PATH, {}).get("post", {}).get("requestBody", {})
    sized = {"type": "string", "format": "binary", "minLength": latent.LATENT_BYTES, "maxLength": latent.LATENT_BYTES}
    content = body.get("content", {})
    if OCTET_STREAM in content:
        content[OCTET_STREAM]["schema"] = dict(sized)
    form = content.get(FORM, {}).get("schema", {})
    if "latent" in form.get("properties", {}):
        form["properties"]["latent"] = dict(sized)


def install_model_docs(app: FastAPI) -> None:
    """Have /openapi.json name the served models and their effort levels (known only once the lifespan has run)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        codecs: Codecs | None = app.state.codecs
        if codecs is None:  # not loaded yet: the generic text, and generate again once they are
            app.openapi_schema = None
            return schema
        describe_models(schema, codecs)
        describe_efforts(schema, codecs)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

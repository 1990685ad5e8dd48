"""The "floor": the same stack doing nothing, to measure the service against.

FastAPI on uvicorn, like the service: /encode reads the multipart upload and
/decode reads the raw body, and both answer 24 constant bytes. Whatever the
service costs beyond this app is its own work.
"""

from fastapi import FastAPI, Request, Response

app = FastAPI()
CONSTANT = bytes(24)


@app.post("/encode")
async def encode(request: Request) -> Response:
    async with request.form() as form:
        upload = form["img"]
        assert not isinstance(upload, str)
        await upload.read()
    return Response(CONSTANT, media_type="application/octet-stream")


@app.post("/decode")
async def decode(request: Request) -> Response:
    await request.body()
    return Response(CONSTANT, media_type="application/octet-stream")

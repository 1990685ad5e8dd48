"""The peer: what a user would write from FastAPI's tutorial, serving the same mlp6 weights.

`UploadFile` for the PNG, Pillow to read and write images, the torch model in
float32, `Response` for the bytes; no limits, no metrics, no access log of its own.
`make bench` runs it with the service's uvicorn command, one worker, and measures it
in the same rounds (bench/bench.py). Its /encode answers mlp6's 6 float32 latents;
its /decode takes them as the raw body and answers a 28x28 PNG, as the service does.
"""

import io
import os
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, File, Request, Response, UploadFile
from PIL import Image

from app.codec.model import load_checkpoint

WEIGHTS = Path(os.environ.get("MNIST_CODEC_WEIGHTS", "model_weights/mlp6.safetensors"))

app = FastAPI()
model = load_checkpoint(WEIGHTS).model.eval()


@app.post("/encode")
async def encode(img: UploadFile = File(...)) -> Response:
    image = Image.open(io.BytesIO(await img.read())).convert("L")
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).reshape(1, 784)
    with torch.no_grad():
        z = model.encode(x)
    return Response(z.numpy().astype("<f4").tobytes(), media_type="application/octet-stream")


@app.post("/decode")
async def decode(request: Request) -> Response:
    z = torch.frombuffer(bytearray(await request.body()), dtype=torch.float32).reshape(1, -1)
    with torch.no_grad():
        y = model.decode(z)
    pixels = (y.clamp(0, 1) * 255).round().to(torch.uint8).reshape(28, 28).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png")

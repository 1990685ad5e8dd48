"""The codec seen from a client: over HTTP (`RemoteCodec`) or in this process (`LocalCodec`).

Both take and give the wire bytes (a PNG in, 24 latent bytes out, and back), so the
command line (`app.client.cli`) does not care which one it drives. On the same device the two
give the same bytes: the server runs the very `Codec` that `LocalCodec` runs.

`RemoteCodec` uses the endpoints every server has (`/encode`, `/decode`, `/readyz`) and
the optional ones only where the server answers them: `GET /models`, and
`POST /encode/batch` (the files as repeated `img` parts, the latents back end to end,
`24 * N` bytes) and `POST /decode/batch` (the latents end to end, a uint8 .npy back, written
out as PNGs here). A 404 or 405 there means "not on this server" and the client falls back.
"""

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.codec import imaging, latent
from app.errors import CodecError, StartupError

DEFAULT_URL = "http://localhost:8000"
URL_ENV = "MNIST_CODEC_URL"


class ClientError(Exception):
    """One request failed; the message is one line, fit to show as is."""


class CodecUnavailable(ClientError):
    """No codec to talk to (server refused, unknown host, timed out; local weights unusable): stop."""


class RemoteCodec:
    """A running mnist-codec server, through httpx with timeouts."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        timeout: float = 30.0,
        connections: int = 4,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.params = {"model": model} if model else {}
        self.http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
            limits=httpx.Limits(max_connections=connections),
            transport=transport,  # tests put a fake server here
        )
        self.batch_available: bool | None = None  # unknown until the first try
        self.model_ids: set[str] = set()

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, params=self.params, **kwargs)
        except httpx.TimeoutException as exc:
            raise CodecUnavailable(f"no answer from {self.url} in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise CodecUnavailable(f"cannot reach {self.url}: {_one_line(exc)}") from exc
        if "x-model-id" in response.headers:
            self.model_ids.add(response.headers["x-model-id"])
        return response

    def _checked(self, response: httpx.Response) -> bytes:
        if response.status_code != 200:
            raise ClientError(f"{response.status_code} {_detail(response)}")
        return response.content

    def encode(self, png: bytes) -> bytes:
        return self._checked(self._send("POST", "/encode", files={"img": ("digit.png", png, "image/png")}))

    def decode(self, data: bytes) -> bytes:
        headers = {"content-type": "application/octet-stream"}
        return self._checked(self._send("POST", "/decode", content=data, headers=headers))

    def encode_batch(self, pngs: Sequence[bytes]) -> list[bytes] | None:
        """All latents from one /encode/batch request, or None: no batch endpoint, or it failed.

        On None the caller sends the files one by one, which also names the file at fault.
        """
        if self.batch_available is False:
            return None
        files = [("img", (f"digit{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
        response = self._send("POST", "/encode/batch", files=files)
        if response.status_code in (404, 405):
            self.batch_available = False
            return None
        body = response.content
        if response.status_code != 200 or len(body) != latent.LATENT_BYTES * len(pngs):
            return None
        self.batch_available = True
        return [body[i : i + latent.LATENT_BYTES] for i in range(0, len(body), latent.LATENT_BYTES)]

    def decode_batch(self, latents: Sequence[bytes]) -> list[bytes] | None:
        """PNGs for all latents from one /decode/batch request, or None (as for `encode_batch`)."""
        if self.batch_available is False:
            return None
        response = self._send("POST", "/decode/batch", content=b"".join(latents))
        if response.status_code in (404, 405):
            self.batch_available = False
            return None
        if response.status_code != 200:
            return None
        try:
            digits = np.load(io.BytesIO(response.content), allow_pickle=False)
        except ValueError:
            return None
        if digits.dtype != np.uint8 or digits.shape != (len(latents), imaging.SIDE, imaging.SIDE):
            return None
        self.batch_available = True
        return [imaging.write_digit(digit) for digit in digits]

    def models(self) -> list[str]:
        """One line per model the server offers: from GET /models, else the one /readyz names."""
        response = self._send("GET", "/models")
        if response.status_code == 200:
            return _model_lines(response.json())
        if response.status_code not in (404, 405):
            raise ClientError(f"GET /models: {response.status_code} {_detail(response)}")
        ready = self._send("GET", "/readyz")
        if ready.status_code != 200:
            raise ClientError(f"GET /readyz: {ready.status_code} {_detail(ready)}")
        return [str(ready.json()["model_id"])]


class LocalCodec:
    """The committed weights (or a given checkpoint) in this process, with the service's settings."""

    def __init__(self, weights: Path, device: str = "auto") -> None:
        from app.codec.codecs import load_codec, pick_device  # numpy on the CPU; torch only for CUDA

        try:
            self.codec = load_codec(weights, pick_device(device))
        except StartupError as exc:
            raise CodecUnavailable(str(exc)) from exc
        self.model_ids = {self.codec.model_id}
        self.batch_available: bool | None = False

    def close(self) -> None:
        pass

    def encode(self, png: bytes) -> bytes:
        try:
            return self.codec.encode(imaging.read_digit(png))
        except CodecError as exc:
            raise ClientError(str(exc)) from exc

    def decode(self, data: bytes) -> bytes:
        try:
            return self.codec.decode(data)
        except CodecError as exc:
            raise ClientError(str(exc)) from exc

    def encode_batch(self, pngs: Sequence[bytes]) -> list[bytes] | None:
        return None  # one call per digit costs microseconds here

    def decode_batch(self, latents: Sequence[bytes]) -> list[bytes] | None:
        return None

    def models(self) -> list[str]:
        return [self.codec.model_id]


def _model_lines(body: Any) -> list[str]:
    """GET /models as lines, whether it lists names, or objects with a name and an id."""
    items = body.get("models", body) if isinstance(body, dict) else body
    if not isinstance(items, list):
        return [json.dumps(body)]
    lines = []
    for item in items:
        if isinstance(item, dict):
            fields = [str(item[key]) for key in ("name", "model_id", "id") if key in item]
            lines.append("  ".join(dict.fromkeys(fields)) or json.dumps(item))
        else:
            lines.append(str(item))
    return lines


def _detail(response: httpx.Response) -> str:
    """The server's `detail`, else the reason phrase."""
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return response.reason_phrase or "error"
    return _one_line(detail if isinstance(detail, str) else json.dumps(detail))


def _one_line(value: object) -> str:
    text = " ".join(str(value).split())
    return text or type(value).__name__

"""The backends of the command: the codec over HTTP (`RemoteBackend`) or in this process (`LocalBackend`).

Both take and give the wire bytes (a PNG in, 24 latent bytes out, and back), so the
command line (`app.client.cli`) does not care which one it drives. On the same device the two
give the same bytes: the server runs the very `Codec` that `LocalBackend` runs.

`RemoteBackend` uses the endpoints every server has (`/encode`, `/decode`, `/readyz`) and
the optional ones only where the server answers them: `GET /models`, and
`POST /encode/batch` (the files as repeated `img` parts, the latents back end to end,
`24 * N` bytes) and `POST /decode/batch` (the latents end to end, a uint8 .npy back, written
out as PNGs here). A 404 or 405 there means "not on this server" and the client falls back.

Before any file is sent, `connect` asks `GET /models`: a server that does not answer it with
a model list is not an mnist-codec server, and the run stops with one line saying so. The
ids it lists are what `decode` checks a stored latent's model id against, and its effort
levels are what `--effort` is checked against (sent as `?effort=N` on the encode requests only:
decoding needs no level). `LocalBackend` checks it against its `Codec`, and at a level above 0
encodes a batch in one call, as the server does: a search costs less per digit in a batch.
"""

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from app.codec import imaging, latent
from app.errors import CodecError, EffortError, StartupError

DEFAULT_URL = "http://localhost:8000"
URL_ENV = "MNIST_CODEC_URL"


class ClientError(Exception):
    """One request failed; the message is one line, fit to show as is."""


class BackendUnavailable(ClientError):
    """No backend to talk to (server refused, unknown host, timed out; local weights unusable): stop."""


class UsageError(ClientError):
    """The command asks for what the backend does not have (an effort level out of the model's range): stop."""


class Backend(Protocol):
    """What the command drives: `RemoteBackend` (a server) or `LocalBackend` (this process)."""

    model_id: str  # the model that encodes, and decodes latents with no recorded model
    format_name: str  # its latent format (app.codec.latent)
    model_ids: set[str]
    served: dict[str, str]  # name -> the model id it means
    versions: dict[str, str]  # every model id served -> its name
    batch_available: bool | None
    effort: int | None  # the encode effort level used (None: the server did not say)

    def connect(self) -> None: ...
    def encode(self, png: bytes) -> bytes: ...
    def decode(self, data: bytes, model_id: str | None = None) -> bytes: ...
    def encode_batch(self, pngs: Sequence[bytes]) -> list[bytes] | None: ...

    def decode_batch(self, latents: Sequence[bytes], model_id: str | None = None) -> list[bytes] | None: ...
    def models(self) -> list[str]: ...
    def close(self) -> None: ...


class RemoteBackend:
    """A running mnist-codec server, through httpx with timeouts."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        timeout: float = 30.0,
        connections: int = 4,
        transport: httpx.BaseTransport | None = None,
        effort: int | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.params = {"model": model} if model else {}
        # ?effort= goes with the encode requests only; none sent: the server's default for the model.
        self.encode_params = {**self.params, **({"effort": str(effort)} if effort is not None else {})}
        self.http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
            limits=httpx.Limits(max_connections=connections),
            transport=transport,  # tests put a fake server here
        )
        self.model = model
        self.batch_available: bool | None = None  # unknown until the first try
        self.model_ids: set[str] = set()  # the ids the server named in its answers
        self.served: dict[str, str] = {}  # name -> the model id it means, from GET /models (connect)
        self.versions: dict[str, str] = {}  # every model id served -> its name
        self.listed: list[dict[str, Any]] = []  # GET /models' entries
        self.model_id = ""  # the model that encodes, and decodes latents of no recorded model
        self.format_name = ""  # its latent format
        self.latent_bytes = latent.LATENT_BYTES  # the size of its latents (connect)
        self.requested_effort = effort
        self.effort: int | None = effort  # the level encoding uses, once known (connect)

    def connect(self) -> None:
        """Ask GET /models what this server serves; BackendUnavailable when it is not an mnist-codec server."""
        response = self._send("GET", "/models")
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:
            body = None
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list) or not all(
            isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("id"), str) for m in models
        ):
            status = response.status_code
            answer = f"answered {status}" if status != 200 else "answered 200, but not with a list of models"
            raise BackendUnavailable(f"not an mnist-codec server at {self.url}: GET /models {answer}")
        self.versions = {m["id"]: m["name"] for m in models}
        # A name means one version (GET /models marks it `current`); a server from before versions lists one each.
        self.served = {m["name"]: m["id"] for m in models if m.get("current", True)}
        self.listed = models
        assert isinstance(body, dict)
        wanted = self.model or body.get("default")
        if wanted in self.versions:  # --model MODEL_ID: exactly those weights
            self.model_id = str(wanted)
        elif wanted in self.served:
            self.model_id = self.served[str(wanted)]
        else:
            ids = ", ".join(self.versions)
            raise BackendUnavailable(
                f"model {wanted!r} is not served at {self.url}; it has: {', '.join(self.served)}; model ids {ids}"
            )
        chosen = next(m for m in models if m["id"] == self.model_id)
        name = str(wanted)
        fmt = chosen.get("latent_format")
        self.format_name = str(fmt.get("name", "")) if isinstance(fmt, dict) else ""
        size = fmt.get("bytes") if isinstance(fmt, dict) else None
        # The model's own size, as the server describes it; one that lists none serves the API's 24 bytes.
        self.latent_bytes = size if isinstance(size, int) and size > 0 else latent.LATENT_BYTES
        self.effort = self._check_effort(name, chosen)

    def _check_effort(self, name: str, model: dict[str, Any]) -> int | None:
        """The level encoding will use: --effort's, checked against the model's levels, else its default."""
        levels = _levels(model)
        default = model.get("default_effort")
        if self.requested_effort is None:
            return default if isinstance(default, int) else None
        if not levels:
            raise UsageError(f"--effort: {self.url} lists no effort levels for model {name!r} (an older server?)")
        if self.requested_effort not in levels:
            raise UsageError(
                f"--effort {self.requested_effort}: model {name!r} at {self.url} has effort levels "
                f"{min(levels)} to {max(levels)}"
            )
        return self.requested_effort

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, params: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, params=self.params if params is None else params, **kwargs)
        except httpx.TimeoutException as exc:
            raise BackendUnavailable(f"no answer from {self.url} in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"cannot reach {self.url}: {_one_line(exc)}") from exc
        if "x-model-id" in response.headers:
            self.model_ids.add(response.headers["x-model-id"])
        return response

    def _checked(self, response: httpx.Response) -> bytes:
        if response.status_code != 200:
            raise ClientError(f"{response.status_code} {_detail(response)}")
        return response.content

    def _made_by_expected(self, response: httpx.Response) -> None:
        # The command records backend.model_id with every latent it writes: it must be the one that made them.
        made_by = response.headers.get("x-model-id")
        if response.status_code == 200 and made_by != self.model_id:
            raise BackendUnavailable(
                f"{self.url} encoded with model {made_by!r}, not {self.model_id!r} as its GET /models said; "
                "stopped rather than record a wrong model id"
            )

    def encode(self, png: bytes) -> bytes:
        response = self._send("POST", "/encode", self.encode_params, files={"img": ("digit.png", png, "image/png")})
        self._made_by_expected(response)
        return self._checked(response)

    def decode(self, data: bytes, model_id: str | None = None) -> bytes:
        """The PNG for one latent; with `model_id`, the server decodes with those weights or refuses (409)."""
        headers = {"content-type": "application/octet-stream", **_claim(model_id)}
        return self._checked(self._send("POST", "/decode", content=data, headers=headers))

    def encode_batch(self, pngs: Sequence[bytes]) -> list[bytes] | None:
        """All latents from one /encode/batch request, or None: no batch endpoint, or it failed.

        On None the caller sends the files one by one, which also names the file at fault.
        """
        if self.batch_available is False:
            return None
        files = [("img", (f"digit{i}.png", png, "image/png")) for i, png in enumerate(pngs)]
        response = self._send("POST", "/encode/batch", self.encode_params, files=files)
        if response.status_code in (404, 405):
            self.batch_available = False
            return None
        self._made_by_expected(response)
        body = response.content
        step = self.latent_bytes
        if response.status_code != 200 or len(body) != step * len(pngs):
            return None
        self.batch_available = True
        return [body[i : i + step] for i in range(0, len(body), step)]

    def decode_batch(self, latents: Sequence[bytes], model_id: str | None = None) -> list[bytes] | None:
        """PNGs for all latents from one /decode/batch request, or None (as for `encode_batch`)."""
        if self.batch_available is False:
            return None
        response = self._send("POST", "/decode/batch", content=b"".join(latents), headers=_claim(model_id))
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
        """One line per model the server serves: its name and id (from `connect`)."""
        names = [m["name"] for m in self.listed]

        def line(m: dict[str, Any]) -> str:
            current = _current(names.count(m["name"]), self.served.get(m["name"]) == m["id"])
            return f"{m['name']}  {m['id']}{_efforts(m)}{current}"

        return [line(m) for m in self.listed]


class LocalBackend:
    """Checkpoints in this process, as a server holds them: by default every shipped version
    (the service's settings); `model` (a name or a model id) picks the one that encodes (and decodes
    latents with no recorded id), and a recorded id picks the weights that made the latent."""

    def __init__(
        self,
        weights: Sequence[Path],
        device: str = "auto",
        effort: int | None = None,
        model: str | None = None,
        default: str | None = None,
        default_versions: str = "",
    ) -> None:
        from app.codec.codecs import Codecs, load_served, parse_default_versions, pick_device  # torch only for CUDA

        try:
            on = pick_device(device)
            pinned = parse_default_versions(default_versions)  # MNIST_CODEC_DEFAULT_VERSIONS, as the server reads it
            self.codecs = Codecs(load_served(list(weights), on), default, pinned)
        except StartupError as exc:
            raise BackendUnavailable(str(exc)) from exc
        try:
            self.codec = self.codecs.get(model)
            self.requested = model
        except CodecError as exc:
            raise BackendUnavailable(f"--model {model}: {exc}".replace("this server has", "--local has")) from exc
        try:
            self.effort: int | None = self.codec.effort(effort).level
        except EffortError as exc:
            raise UsageError(f"--effort {effort}: {exc}") from exc
        self.model_id = self.codec.model_id
        self.format_name = self.codec.format.name
        self.served = {name: codec.model_id for name, codec in self.codecs.by_name.items()}
        self.versions = {codec.model_id: codec.name for codec in self.codecs}
        self.model_ids: set[str] = set()  # the weights that did the work, as the HTTP backend counts them
        self.batch_available: bool | None = False

    def connect(self) -> None:
        pass  # loaded in __init__

    def close(self) -> None:
        pass

    def encode(self, png: bytes) -> bytes:
        try:
            data = self.codec.encode(imaging.read_digit(png), self.effort or 0)
        except CodecError as exc:
            raise ClientError(str(exc)) from exc
        self.model_ids.add(self.codec.model_id)
        return data

    def decode(self, data: bytes, model_id: str | None = None) -> bytes:
        # The server's one rule (Codecs.resolve): the id picks its version, or is refused (409) when it is not
        # one of --model's; without an id, a name with several versions is not guessed.
        try:
            codec = self.codecs.resolve(self.requested, model_id)
            png = codec.decode(data)
        except CodecError as exc:
            raise ClientError(str(exc)) from exc
        self.model_ids.add(codec.model_id)
        return png

    def encode_batch(self, pngs: Sequence[bytes]) -> list[bytes] | None:
        """At level 0, None: one call per digit costs microseconds here. A search is cheaper per digit in a
        batch (the same bytes); a batch with a bad file is None too, and file by file names it."""
        if not self.effort:
            return None
        try:
            digits = np.stack([imaging.read_digit(png) for png in pngs])
        except CodecError:
            return None
        body = self.codec.encode_many(digits, self.effort)  # a search runs on one BLAS thread (app.codec.blas)
        self.model_ids.add(self.codec.model_id)
        step = self.codec.format.nbytes
        return [body[i : i + step] for i in range(0, len(body), step)]

    def decode_batch(self, latents: Sequence[bytes], model_id: str | None = None) -> list[bytes] | None:
        return None

    def models(self) -> list[str]:
        return [
            f"{c.name}  {c.model_id}{_current(len(self.codecs.versions[c.name]), self.codecs.means(c))}"
            for c in self.codecs
        ]


def _levels(model: dict[str, Any]) -> list[int]:
    """The effort levels GET /models lists for a model; [] for a server that lists none."""
    efforts = model.get("efforts")
    if not isinstance(efforts, list):
        return []
    return [e["level"] for e in efforts if isinstance(e, dict) and isinstance(e.get("level"), int)]


def _efforts(model: dict[str, Any]) -> str:
    """ "  effort 0-4 (default 0)" for a model that lists its levels, else nothing."""
    levels = _levels(model)
    if not levels:
        return ""
    default = model.get("default_effort")
    return f"  effort {min(levels)}-{max(levels)}" + (f" (default {default})" if isinstance(default, int) else "")


def _current(versions: int, current: bool) -> str:
    """Marks the version a name means, where the name has several."""
    return "  (current)" if current and versions > 1 else ""


def _claim(model_id: str | None) -> dict[str, str]:
    """The X-Model-Id request header for a latent of a known model, else none."""
    return {"x-model-id": model_id} if model_id else {}


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

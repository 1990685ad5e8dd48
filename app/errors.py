"""Errors raised by mnist-codec's pure modules.

The hierarchy, and the HTTP status the web layer (`app.service.errors`) gives each:

    CodecError(ValueError)          a client sent something we cannot use
     ├── ImageError                 400  empty, not an image, corrupt or truncated PNG
     │    ├── NotPNGError           415  a readable image, but not a PNG (JPEG, GIF, ...)
     │    └── ImageSizeError        422  a PNG that is not 28x28
     ├── LatentError                422  not 24 bytes, or NaN / infinite values
     ├── RequestFormatError         422  wrong content type, missing form field
     │    └── EffortError           422  ?effort= is not a level the model has
     ├── BodyFormatError            400  a multipart body that does not parse
     ├── ModelMismatchError         409  the latent names other weights (X-Model-Id)
     └── UnknownModelError          404  ?model= names no model this server holds
    StartupError(RuntimeError)      the service cannot start (bad settings, no CUDA)
     └── CheckpointError            the weights cannot be loaded
    DataError(RuntimeError)         MNIST could not be prepared on disk

Only `app.service.errors` knows about status codes; everything else raises these.
"""


class CodecError(ValueError):
    """Bad input from a client. The message is shown to the client as is."""


class ImageError(CodecError):
    """The upload is not a usable PNG."""


class NotPNGError(ImageError):
    """The upload is an image, but of a format other than PNG."""


class ImageSizeError(ImageError):
    """The PNG is readable but not 28x28."""


class LatentError(CodecError):
    """The latent bytes do not follow the wire format."""


class RequestFormatError(CodecError):
    """The request itself has the wrong shape (content type, form fields)."""


class EffortError(RequestFormatError):
    """The requested encode effort is not an integer level of the model; the message names the range."""


class BodyFormatError(CodecError):
    """The body does not parse as the format its Content-Type names (a malformed multipart form)."""


class ModelMismatchError(CodecError):
    """The client's X-Model-Id names weights other than the ones that would decode."""


class UnknownModelError(CodecError):
    """The request asks for a model the server does not hold."""


class StartupError(RuntimeError):
    """The service cannot start; the message is the one line an operator sees."""


class CheckpointError(StartupError):
    """A checkpoint is missing, unreadable or does not fit the architecture."""


class DataError(RuntimeError):
    """MNIST could not be fetched, converted or verified."""

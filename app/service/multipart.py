"""multipart/form-data bodies already in memory, read by plain functions (so worker threads can too).

Starlette's `MultiPartParser` is a coroutine: it must run on the event loop,
and there it holds the loop for the whole body (0.3 to 0.45 s for 10,000 digit
PNGs, measured), and makes a SpooledTemporaryFile per file part. The batch
endpoint calls this instead, in a worker thread: python-multipart's own
parser with the same callbacks, the same limits and the same error messages as
Starlette's, each part's bytes kept in memory (the body is there already, and
bounded by `max_batch_bytes`). The single endpoints use it too (`read_file_field`), behind
`one_file_part`: the shortcut for the body `curl -F img=@7.png` sends, exactly one file part.
`file_parts` is the one reading of a form's file fields both kinds of endpoint share.
"""

import codecs
import functools
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.errors import BodyFormatError, RequestFormatError

MAX_TEXT_BYTES = 1024 * 1024  # a text field (never a file), as Starlette bounds it


class MultipartError(ValueError):
    """The body does not parse; the message says why (Starlette's wording)."""


@dataclass
class Part:
    name: str
    filename: str | None  # None for a text field
    data: bytearray = field(default_factory=bytearray)
    content_type: bytes | None = None  # the part's own Content-Type header, when it has one


def counts_as_file(filename: object, content_type: bytes | None, data: bytes | bytearray) -> bool:
    """Whether a part is a file: it has a filename, or (a client that sends none, like httpx's
    `files={"img": (None, data)}` and the clients generated from our OpenAPI) it says it is not text
    with a Content-Type, or its bytes are not UTF-8 text (a PNG never is: its signature's 0x89).

    A part with none of these is the text field of `curl -F img=7.png` (the @ forgotten).
    """
    if filename is not None:
        return True
    if content_type is not None:
        kind = content_type.split(b";", 1)[0].strip().lower()
        if kind and not kind.startswith(b"text/"):
            return True
    try:
        bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def skip_preamble(body: bytes, content_type: str) -> bytes:
    """`body` from its first boundary delimiter on (RFC 2046: the preamble before it is to be ignored)."""
    boundary = _boundary(content_type)
    if not boundary:
        return body  # the parser says what is wrong
    delimiter = b"--" + boundary
    if body.startswith(delimiter):
        return body
    found = body.find(b"\r\n" + delimiter)
    return body[found + 2 :] if found >= 0 else body


def _decode(raw: bytes | bytearray, charset: str) -> str:
    try:
        return raw.decode(charset)
    except (UnicodeDecodeError, LookupError):
        return raw.decode("latin-1")


class _Collector:
    """python-multipart's callbacks: every part, in order, with its name, file name and bytes."""

    def __init__(self, charset: str, max_files: int, max_fields: int) -> None:
        self.charset = charset
        self.max_files = max_files
        self.max_fields = max_fields
        self.parts: list[Part] = []
        self.files = self.fields = 0
        self._disposition = b""
        self._content_type: bytes | None = None
        self._header_name = b""
        self._header_value = b""
        self._part = Part("", None)

    def on_part_begin(self) -> None:
        self._disposition = b""
        self._content_type = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        elif self._header_name.lower() == b"content-type":
            self._content_type = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise MultipartError('The Content-Disposition header field "name" must be provided.')
        filename = None
        if b"filename" in options:
            self.files += 1
            if self.files > self.max_files:
                raise MultipartError(f"Too many files. Maximum number of files is {self.max_files}.")
            filename = _decode(options[b"filename"], self.charset)
        else:
            self.fields += 1
            if self.fields > self.max_fields:
                raise MultipartError(f"Too many fields. Maximum number of fields is {self.max_fields}.")
        self._part = Part(_decode(options[b"name"], self.charset), filename, content_type=self._content_type)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._part.data += data[start:end]
        if self._part.filename is None and len(self._part.data) > MAX_TEXT_BYTES:
            raise MultipartError(f"Part exceeded maximum size of {MAX_TEXT_BYTES // 1024}KB.")

    def on_part_end(self) -> None:
        self.parts.append(self._part)


def parse(body: bytes, content_type: str, max_files: int, max_fields: int) -> list[Part]:
    """Every part of a multipart/form-data `body`, in order; MultipartError when it does not parse.

    The preamble before the first delimiter is skipped (RFC 2046, 5.1.1), the epilogue ignored.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError("Missing boundary in multipart.")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "latin-1"
    collector = _Collector(charset, max_files, max_fields)
    callbacks = {
        name: getattr(collector, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(skip_preamble(body, content_type))
        parser.finalize()
    except FormParserError as exc:
        raise MultipartError("Invalid multipart data.") from exc
    return collector.parts


@functools.lru_cache(maxsize=64)
def _boundary(content_type: str) -> bytes | None:
    _, options = parse_options_header(content_type)
    boundary: bytes | None = options.get(b"boundary")
    return boundary


@functools.lru_cache(maxsize=256)
def _form_field(disposition: bytes) -> tuple[bytes | None, bool]:
    """The field name of a `form-data` Content-Disposition (None for anything else), and whether it has a filename."""
    kind, options = parse_options_header(disposition)
    if kind != b"form-data":
        return None, False
    name: bytes | None = options.get(b"name")
    return name, b"filename" in options


def one_file_part(body: bytes, content_type: str, field: str) -> bytes | None:
    """The data of the one file part named `field`, when `body` is exactly that part; else None.

    What a client sends for `curl -F img=@7.png`: the opening delimiter, a
    Content-Disposition with the name and a filename, perhaps a Content-Type, the
    data, the close delimiter (an epilogue after it is ignored, as RFC 2046 says).
    Found with four searches instead of python-multipart's callbacks, a spooled
    temporary file and a form (about 30 us a request). Anything else (a preamble,
    more parts, other part headers, a part that `counts_as_file` calls text)
    gets None, and the full parser, which decides what it means and words its errors.
    """
    boundary = _boundary(content_type)
    if not boundary:
        return None
    opening = b"--" + boundary + b"\r\n"
    if not body.startswith(opening):
        return None
    head_end = body.find(b"\r\n\r\n", len(opening))
    if head_end < 0:
        return None
    named = has_filename = False
    part_type: bytes | None = None
    for line in body[len(opening) : head_end].split(b"\r\n"):
        name, colon, value = line.partition(b":")
        name = name.strip().lower()
        if not colon or name not in (b"content-disposition", b"content-type"):
            return None
        if name == b"content-disposition":
            field_name, has_filename = _form_field(value)
            if named or field_name != field.encode():
                return None
            named = True
        else:
            part_type = value.strip()
    if not named:
        return None
    start = head_end + 4
    end = body.find(b"\r\n--" + boundary, start)
    if end < 0 or body[end + 4 + len(boundary) : end + 6 + len(boundary)] != b"--":
        return None  # no delimiter, or one that opens another part
    data = body[start:end]
    if not has_filename and not counts_as_file(None, part_type, data):
        return None  # a text field: the full parser's path words the error
    return data


def file_parts(body: bytes, content_type: str, field: str, what: str, example: str, max_files: int) -> list[Part]:
    """The parts named `field` of a multipart/form-data body, in order: at least one, or RequestFormatError
    (422) naming the fields received; a body that does not parse is a BodyFormatError (400)."""
    try:
        form = parse(body, content_type, max_files=max_files, max_fields=8)
    except MultipartError as exc:
        raise BodyFormatError(f"malformed multipart body: {exc}") from exc
    parts = [part for part in form if part.name == field]
    if not parts:
        names = ", ".join(dict.fromkeys(repr(part.name) for part in form)) or "none"
        raise RequestFormatError(f"missing file field '{field}' holding {what} ({example}); fields received: {names}")
    return parts


async def read_file_field(request: Request, field: str, what: str) -> bytes:
    """The bytes of the one file part named `field` of a multipart/form-data request body (a single endpoint's).

    A part counts as a file when it has a filename, or, without one, a Content-Type other
    than text, or bytes that are not UTF-8 text (`counts_as_file`): what httpx and the
    generated clients send for `File(payload=...)` with no file name.
    """
    content_type = request.headers.get("content-type", "")
    example = f"curl -F {field}=@FILE"
    if not content_type.startswith("multipart/form-data"):
        received = content_type or "no Content-Type"
        raise RequestFormatError(
            f"expected multipart/form-data with a file field '{field}' holding {what} ({example}); received {received}"
        )
    body = await request.body()
    single = one_file_part(body, content_type, field)
    if single is not None:
        return single
    parts = file_parts(body, content_type, field, what, example, max_files=8)
    if len(parts) > 1:
        raise RequestFormatError(f"expected one '{field}' field, received {len(parts)}")
    part = parts[0]
    if not counts_as_file(part.filename, part.content_type, part.data):
        raise RequestFormatError(
            f"field '{field}' must be a file upload ({example}), not a text field: this part has no filename, "
            "no Content-Type and text for bytes; give it a filename or a Content-Type such as "
            f"{'image/png' if field == 'img' else 'application/octet-stream'}"
        )
    return bytes(part.data)

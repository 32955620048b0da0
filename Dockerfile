# cleandoc in a container. CPU image by default:
#   docker build -t cleandoc .
# CUDA image: a CUDA runtime base and the matching torch wheels, e.g.
#   docker build -t cleandoc:cuda --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# CUDA bases come without Python; python:* and Debian bases already have it.
# hadolint ignore=DL3008
RUN if ! python3 -c "import venv, ensurepip" 2>/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# Installed the way the README does: the torch pin first, then the package.
RUN python3 -m venv /opt/venv \
    && python3 -m pip install --extra-index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY cleandoc ./cleandoc
COPY models ./models
RUN python3 -m pip install . && cleandoc --version

WORKDIR /data
ENTRYPOINT ["cleandoc"]
CMD ["--help"]

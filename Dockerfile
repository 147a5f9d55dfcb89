# fo-edge: the on-device training demo in a container.
#   docker build -t fo-edge . && docker run --rm fo-edge            # fo-edge demo
#   docker run --rm fo-edge simulate --device loihi-like --rule ftp
# Machines without a container registry: tools/container_check.sh builds FROM a debootstrapped Debian bookworm
# (BASE=localhost/...), with the machine's CA bundle and CPU-torch wheel folder mounted (CA_BUNDLE, FIND_LINKS).
# The install is the README's (the package, its pinned CPU torch and requirements.lock), minus the test extras,
# in a virtual environment; single stage, no build tools, apt lists or pip caches left behind.
ARG BASE=python:3.11-slim
FROM ${BASE}

# TORCH_INDEX: PyTorch's CPU index (PyPI's torch wheel pulls multi-GB CUDA libraries); empty uses PyPI plus
# FIND_LINKS, a folder holding the CPU wheel. CA_BUNDLE: a CA bundle for a TLS proxy (empty: the system's).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG FIND_LINKS=
ARG CA_BUNDLE=

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    PATH=/opt/venv/bin:$PATH

WORKDIR /opt/fo-edge
COPY setup.py README.md requirements.lock ./
COPY devices ./devices
COPY recipes ./recipes
COPY fo_edge ./fo_edge
# python:3.11-slim has Python 3.11; a bare Debian bookworm base gets it (bookworm's python3 is 3.11) from apt
# DL3008: bookworm's python3 is the pinned part (3.11); DL3013: every pip package is pinned by torch==2.13.0 and
# requirements.lock, hadolint cannot read the pins through the ${VAR:+...} options
# hadolint ignore=DL3008,DL3013
RUN if ! command -v python3.11 >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3.11 -m venv /opt/venv \
    && pip install --no-cache-dir ${CA_BUNDLE:+--cert "$CA_BUNDLE"} ${FIND_LINKS:+--find-links "$FIND_LINKS"} \
        ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} torch==2.13.0 \
    && pip install --no-cache-dir ${CA_BUNDLE:+--cert "$CA_BUNDLE"} ${FIND_LINKS:+--find-links "$FIND_LINKS"} \
        -c requirements.lock . \
    && groupadd --gid 10001 app \
    && useradd --create-home --uid 10001 --gid 10001 app

USER 10001:10001
WORKDIR /home/app
ENTRYPOINT ["fo-edge"]
CMD ["demo"]

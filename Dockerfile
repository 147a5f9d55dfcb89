# fo-edge: the on-device training demo in a container.
#   docker build -t fo-edge . && docker run --rm fo-edge            # fo-edge demo
#   docker run --rm fo-edge simulate --device loihi-like --rule ftp
# Same install as the README (the package, its pinned CPU torch and requirements.lock), minus the test extras; single stage, and
# pip leaves no build tools or caches behind.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /opt/fo-edge
COPY setup.py README.md requirements.lock ./
COPY devices ./devices
COPY recipes ./recipes
COPY fo_edge ./fo_edge
# torch==2.13.0 from PyTorch's CPU index (PyPI's wheel pulls multi-GB CUDA libraries); then the package itself
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && pip install --no-cache-dir -c requirements.lock . \
    && groupadd --gid 10001 app \
    && useradd --create-home --uid 10001 --gid 10001 app

USER 10001:10001
WORKDIR /home/app
ENTRYPOINT ["fo-edge"]
CMD ["demo"]

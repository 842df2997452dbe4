# syntax=docker/dockerfile:1
# A small image that runs `udpdht node`. docs/deploy.md has the whole story; in short:
#   docker build -t udpdht .
#   docker run -d --name udpdht --network host --stop-timeout 30 -v udpdht-data:/data \
#       -e UDPDHT_ADVERTISE=192.0.2.10:7000 -e UDPDHT_BOOTSTRAP=192.0.2.11:7000 \
#       -e UDPDHT_METRICS=127.0.0.1:9100 udpdht
# (With the host's network, metrics on loopback: the image's default, 0.0.0.0:9100, is for a
# container network, where only a published port reaches it.)
#   docker exec udpdht udpdht status
# Every option of `udpdht node` can be set here as UDPDHT_<OPTION> (docker run -e) or given
# as arguments after the image name; arguments win over the environment.

# --- builder: the project's wheel and its dependencies' wheels ----------------------------------
# The project's wheel is the compiled build (README "A compiled build"): mypyc compiles the RPC
# layer, its codec and the ring's tables to C, which takes a C compiler here, in the builder
# only; the image gets the wheel. `docker build --build-arg UDPDHT_COMPILE=0 .` builds it pure
# Python, with no compiler. `udpdht --version` in the image says which.
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
ARG UDPDHT_COMPILE=1
RUN case "$UDPDHT_COMPILE" in \
        ""|0|false|no|off) ;; \
        *) apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
           && rm -rf /var/lib/apt/lists/* ;; \
    esac
WORKDIR /src
COPY pyproject.toml README.md setup.py ./
COPY udpdht/ udpdht/
COPY shell/ shell/
# No build isolation: setup.py imports mypyc, installed here, to compile. mypy pinned to the
# version the compiled build is tested with, so that an image builds the same code each time.
# (The dependencies come as wheels on amd64 and arm64; elsewhere they would build from source
# without isolation too.)
RUN pip install "setuptools>=77" wheel "mypy==2.4.1" \
    && pip wheel --no-build-isolation --wheel-dir /wheels ".[fast,metrics]"

# --- the image: the wheels installed, nothing else ----------------------------------------------
FROM python:3.11-slim
LABEL org.opencontainers.image.title="udpdht" \
      org.opencontainers.image.description="A peer-to-peer distributed hash table over UDP"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# The wheels are mounted from the builder for this one step, so no layer keeps them.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels "udpdht[fast,metrics]"
# A user of its own; /data is made before VOLUME so that a new volume starts out owned by it.
RUN groupadd --system --gid 10001 udpdht \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/udpdht \
        --shell /usr/sbin/nologin udpdht \
    && mkdir /data && chown 10001:10001 /data && chmod 0700 /data
# Bind every address and advertise the one peers reach the node at (UDPDHT_ADVERTISE, or the
# address the container routes to its bootstrap from); the data dir holds the store, the admin
# cookie, the remembered peers and the lock that keeps a second node out.
ENV UDPDHT_HOST=0.0.0.0 \
    UDPDHT_PORT=7000 \
    UDPDHT_DATA_DIR=/data \
    UDPDHT_METRICS=0.0.0.0:9100 \
    UDPDHT_LOG_FORMAT=json \
    UDPDHT_NODE=127.0.0.1:7000
VOLUME ["/data"]
EXPOSE 7000/udp 9100/tcp
USER 10001:10001
WORKDIR /home/udpdht
# Healthy while the node answers `status` on its own port (an isolated node still answers).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --start-interval=2s --retries=3 \
    CMD udpdht status --node "127.0.0.1:${UDPDHT_PORT}" --timeout 2 --tries 1 >/dev/null || exit 1
# SIGTERM (docker stop) makes the node leave: it hands its keys on for up to 10 s, so give it
# more than Docker's default 10 s (docker run --stop-timeout 30, compose stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["udpdht", "node"]

# ifmatch-proxy as a sidecar container.
#
#   docker build -t ifmatch-proxy .
#   docker run --rm -p 8080:8080 -v "$PWD/examples/sidecar.yaml:/etc/ifmatch-proxy/config.yaml:ro" ifmatch-proxy
#
# The configuration is read from /etc/ifmatch-proxy/config.yaml: mount a file or a ConfigMap
# there (the image ships none, so that a missing mount fails loudly). In a container, `listen`
# must not be 127.0.0.1 unless only containers sharing the network namespace may connect
# (examples/sidecar.yaml, examples/kubernetes/pod.yaml). The Redis password may come from the environment (IFM_REDIS_PASSWORD). SIGTERM drains:
# no new connections, in-flight requests get up to limits.drain_timeout (30 s by default), so give
# the container a stop timeout above that. SIGHUP reloads the configuration.
# tests/redis/dockerfile_test.cpp checks that the runtime stages install every shared library the
# binary needs and that the paths and flags below match the binary; scripts/container-test builds
# the image with podman (the `prebuilt` target, or with --full this whole file) and runs it.

# ---- build stage: Debian 12 with the toolchain and -dev packages -----------------------------
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libboost1.81-dev libspdlog-dev libyaml-cpp-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY config/ config/
COPY cache/ cache/
COPY proxy/ proxy/
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DIFM_TESTS=OFF \
 && cmake --build build -j"$(nproc)" --target ifmatch-proxy \
 && strip build/ifmatch-proxy \
 && build/ifmatch-proxy --version

# ---- runtime-base: Debian slim, only the shared libraries the binary links, the user ---------
# Everything the two final stages share, including the metadata (a stage built FROM another one
# inherits its USER, EXPOSE, STOPSIGNAL, HEALTHCHECK, ENTRYPOINT and CMD).
FROM debian:12-slim AS runtime-base
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libssl3 libspdlog1.10 libfmt9 libyaml-cpp0.7 libstdc++6 libgcc-s1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ifmatch \
 && mkdir -p /etc/ifmatch-proxy
USER 10001:10001
# 8080: client traffic (listen), 9901: /healthz /readyz /metrics (admin_listen).
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/ifmatch-proxy", "--config", "/etc/ifmatch-proxy/config.yaml", "--healthcheck"]
ENTRYPOINT ["/usr/local/bin/ifmatch-proxy"]
CMD ["--config", "/etc/ifmatch-proxy/config.yaml"]

# ---- prebuilt: the runtime image around a binary taken from the build context ----------------
# Not built by default. scripts/container-test builds it (--target prebuilt) from a context that
# holds only a stripped `ifmatch-proxy` compiled on Debian 12, to test the image without the
# build stage's compile; the build stage is skipped.
FROM runtime-base AS prebuilt
COPY ifmatch-proxy /usr/local/bin/ifmatch-proxy

# ---- runtime (the default target): the binary of the build stage ----------------------------
FROM runtime-base AS runtime
COPY --from=build /src/build/ifmatch-proxy /usr/local/bin/ifmatch-proxy

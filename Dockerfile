# syntax=docker/dockerfile:1
# runwarden sidecar image: multi-stage on Debian 12 (bookworm).
#   docker build -t runwarden .                              runtime image (default target)
#   docker build -t runwarden-iptables-init --target iptables-init .   init-container image
# Runtime libraries were checked against `ldd` of a Release build (see docs/deploy.md).

# ---- build ------------------------------------------------------------------------------
FROM debian:bookworm AS build
# The build half of scripts/install-deps.sh: no tests, benchmarks, Node, clang tooling.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libboost1.81-dev libssl-dev nlohmann-json3-dev libyaml-cpp-dev libre2-dev libcli11-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DRUNWARDEN_BUILD_TESTS=OFF -DRUNWARDEN_BUILD_BENCH=OFF -DRUNWARDEN_WERROR=OFF \
 && cmake --build build --target runwarden \
 && install -D -m 0755 -s build/app/runwarden /out/usr/local/bin/runwarden \
 && install -D -m 0755 deploy/docker/healthcheck.sh /out/usr/local/bin/runwarden-healthcheck \
 && install -D -m 0755 deploy/iptables-init.sh /out/usr/local/bin/runwarden-iptables-init

# ---- init container: installs the transparent-mode redirect (needs NET_ADMIN, NET_RAW) ----
FROM debian:bookworm-slim AS iptables-init
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/usr/local/bin/runwarden-iptables-init /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/runwarden-iptables-init"]

# ---- runtime ----------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# ldd runwarden: libssl.so.3 + libcrypto.so.3 (libssl3), libyaml-cpp.so.0.7 (libyaml-cpp0.7),
# libre2.so.9 (libre2-9), libstdc++.so.6 (libstdc++6), libgcc_s/libc/libm (in the base).
# ca-certificates: the system trust store for `tls.upstream_trust: system`.
# No curl: the health check is bash's /dev/tcp (deploy/docker/healthcheck.sh).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libssl3 libyaml-cpp0.7 libre2-9 libstdc++6 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 15001 runwarden \
 && useradd --system --uid 15001 --gid 15001 --home-dir /var/lib/runwarden \
      --no-create-home --shell /usr/sbin/nologin runwarden \
 && install -d -o runwarden -g runwarden -m 0750 /var/lib/runwarden /var/lib/runwarden/audit \
 && install -d -m 0755 /etc/runwarden
COPY --from=build /out/usr/local/bin/runwarden /out/usr/local/bin/runwarden-healthcheck /usr/local/bin/
USER 15001:15001
WORKDIR /var/lib/runwarden
# 15001 explicit proxy, 15006 transparent, 15000 admin (listen.* in runwarden.yaml).
EXPOSE 15000 15001 15006
ENV RUNWARDEN_HEALTH_ADDR=127.0.0.1:15000
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/runwarden-healthcheck"]
ENTRYPOINT ["runwarden", "serve", "-c", "/etc/runwarden/runwarden.yaml"]

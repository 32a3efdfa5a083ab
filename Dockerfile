# syntax=docker/dockerfile:1
#
# balagh's production image: the `balagh` binary on a distroless base, running as the fixed
# non-root user 65532 that the Helm chart (helm/balagh) expects.
#
#   docker build -t balagh:0.1.0 .
#   docker run --rm -p 50051:50051 balagh:0.1.0        # SQLite in the container, for a try
#
# In Kubernetes the chart runs it with a read-only root filesystem against PostgreSQL
# (BALAGH_DATABASE_URL from a Secret) and a mounted balagh.toml; see helm/balagh/README.md.
# The protos are compiled by build.rs with protox, and migrations and the default catalog are
# compiled into the binary, so the image needs nothing but the binary.

ARG RUST_VERSION=1.94

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds; the binary is
# copied out of the cached target directory since a cache mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin balagh \
 && install -D -m 0755 target/release/balagh /out/balagh

# glibc and libgcc from Debian 12, as the build stage; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="balagh" \
      org.opencontainers.image.description="Muscat Municipality's ticket registry (gRPC)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
COPY --from=build /out/balagh /usr/local/bin/balagh
# The nonroot user's home (owned by 65532) holds ./data/balagh.db when no PostgreSQL URL is
# given; under the chart the root filesystem is read-only and PostgreSQL is used.
WORKDIR /home/nonroot
# Numeric, so Kubernetes can verify runAsNonRoot.
USER 65532:65532
# Reachable from outside the container; flags given to `serve` (as the chart does) win.
ENV BALAGH_LISTEN=0.0.0.0:50051 \
    BALAGH_LOG_FORMAT=json
EXPOSE 50051
# SIGTERM stops the server gracefully (health NOT_SERVING, in-flight calls finish).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/balagh"]
CMD ["serve"]

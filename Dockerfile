# The gateway: `docker build -t strata-gateway .`, then
#   docker run -p 8080:8080 -p 127.0.0.1:8081:8081 -v $PWD/gateway.toml:/etc/strata/gateway.toml:ro \
#     -e STRATA_ADMIN_TOKEN=… -e REDIS_URL=redis://redis:6379 strata-gateway
# The default configuration (deploy/docker/gateway.toml) listens on 0.0.0.0:8080 (the admin
# API, /metrics and the dashboard on 0.0.0.0:8081) and sends
# every path to http://upstream:3000; without REDIS_URL (or `redis = …`) the gateway caches
# alone, in memory.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# A gateway-only `strata` (no demo, no plots), built for shipping (thin LTO, stripped).
RUN cargo build --locked --profile dist -p strata-cli --no-default-features \
    && cp target/dist/strata /usr/local/bin/strata

FROM debian:bookworm-slim
# CA certificates for rediss:// to a managed Redis.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home strata
COPY --from=build /usr/local/bin/strata /usr/local/bin/strata
COPY deploy/docker/gateway.toml /etc/strata/gateway.toml
USER strata
EXPOSE 8080 8081
# Alive when it accepts connections on its port (the admin API needs the token).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"]
ENTRYPOINT ["strata"]
CMD ["gateway", "--config", "/etc/strata/gateway.toml"]

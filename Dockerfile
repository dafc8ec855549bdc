# Build stage: the release binary, with dependencies cached in their own layer.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked && rm -rf src
COPY src src
COPY migrations migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

# Runtime stage: the binary and CA roots, run as an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home plansync
COPY --from=build /src/target/release/plansync /usr/local/bin/plansync
COPY fixtures /usr/share/plansync/fixtures
USER plansync
ENV PLANSYNC_HTTP_ADDR=0.0.0.0:8080 PLANSYNC_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["plansync"]
CMD ["run"]

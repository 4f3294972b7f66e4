# The image the install manifests run: `docker build -t REGISTRY/portico:TAG .`
FROM rust:1-bookworm AS build
WORKDIR /src
# Profile-guided: an instrumented build serves the load bench's suites once and the
# release build is laid out by that run (benches/pgo.sh), which needs the bench's tools.
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       nginx-light wrk nghttp2-client python3 openssl \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN benches/pgo.sh

# Distroless: no shell, no package manager; runs as uid 65532 like the Deployment asks.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ingress-controller /usr/local/bin/ingress-controller
USER 65532:65532
EXPOSE 8080 8443 10254
ENTRYPOINT ["/usr/local/bin/ingress-controller"]

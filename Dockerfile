# The image the install manifests run: `docker build -t REGISTRY/portico:TAG .`
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ingress-controller --bin ingress-controller

# Distroless: no shell, no package manager; runs as uid 65532 like the Deployment asks.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ingress-controller /usr/local/bin/ingress-controller
USER 65532:65532
EXPOSE 8080 8443 10254
ENTRYPOINT ["/usr/local/bin/ingress-controller"]

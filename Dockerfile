# syntax=docker/dockerfile:1
# The T.A.R.S. gateway as a container: the static (musl) binary that
# scripts/release builds, on distroless/static (no shell, no package manager;
# CA roots, /etc/passwd and the `nonroot` user, uid 65532).
#
#   scripts/release                  # dist/tars-VERSION-{x86_64,aarch64}-unknown-linux-musl
#   docker build -t tars .           # this machine's architecture
#   docker buildx build --platform linux/amd64,linux/arm64 -t tars .   # both
#   docker run -d --name tars -p 8443:8443 -v tars-data:/var/lib/tars tars
#
# The build context is only dist/'s binaries (.dockerignore); keep one version
# in dist/. BuildKit (the default builder since Docker 23) is needed for
# TARGETARCH and the heredoc below.
#
# Config: /etc/tars/config.toml, the default written below; mount your own over
# it read-only (-v ./config.toml:/etc/tars/config.toml:ro), keeping data_dir
# and the tls paths under /var/lib/tars. State (the generated JWT key and
# certificate, revoked.log): the volume /var/lib/tars. Any tars command runs
# the same way: docker run --rm -v tars-data:/var/lib/tars tars gen-cert --host nas.local
#
# No HEALTHCHECK: without a shell or curl in the image it would need a tars
# subcommand that probes /health, which tars does not have yet. Probe
# https://HOST:8443/health from outside (README "Install").

ARG TARGETARCH

FROM scratch AS bin-amd64
COPY dist/tars-*-x86_64-unknown-linux-musl /tars

FROM scratch AS bin-arm64
COPY dist/tars-*-aarch64-unknown-linux-musl /tars

FROM bin-${TARGETARCH} AS bin

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=bin --chmod=0755 /tars /usr/local/bin/tars

COPY --chmod=0644 <<'TOML' /etc/tars/config.toml
# T.A.R.S. gateway in a container. Every key not set here takes the default
# of the annotated config.toml in the repository (README "Configuration").
[server]
listen = "0.0.0.0:8443"
data_dir = "/var/lib/tars"

[tls]
# Generated on first start (self-signed, logged with its SHA-256 fingerprint)
# unless you put your own pair there.
cert = "/var/lib/tars/certs/tars.crt"
key = "/var/lib/tars/certs/tars.key"

[ollama]
# The `ollama` service of docs/examples/compose.yaml.
host = "http://ollama:11434"
model = "mistral:7b-instruct"
TOML

# The data folder must exist and belong to nonroot before a volume is mounted
# on it: a new named volume takes over its owner. (BuildKit's COPY --chown
# gives the folder it creates to that user.)
COPY --chown=65532:65532 --chmod=0600 <<'TXT' /var/lib/tars/README
State of the T.A.R.S. gateway: jwt.secret (the token signing key), certs/ (the
generated certificate), revoked.log. Keep it on a volume and back it up.
TXT

USER 65532:65532
VOLUME ["/var/lib/tars"]
EXPOSE 8443
# SIGTERM drains: running answers get [server] shutdown_grace_secs (30 s) to
# finish; give `docker stop` longer than that (docker stop -t 45, compose
# stop_grace_period: 45s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tars", "--config", "/etc/tars/config.toml"]
CMD ["serve"]

#!/bin/sh
# Container entrypoint: mlink-entrypoint BINARY [ARGS...]
# Checks that the mounted config and the TLS files it names are readable by this (non-root)
# user, says which one is not, then runs BINARY with --config (MLINK_CONFIG, default
# /etc/mlink/config.yaml) and ARGS. It reads nothing else and writes nothing.
set -eu
bin=${1:?usage: mlink-entrypoint mlink-cloud|mlink-edge [ARGS...]}
shift
config=${MLINK_CONFIG:-/etc/mlink/config.yaml}
if [ ! -r "$config" ]; then
  echo "mlink-entrypoint: config $config is not mounted or not readable by uid $(id -u)" >&2
  exit 2
fi
for f in ${MLINK_REQUIRED_FILES:-/etc/mlink/certs/ca.pem}; do
  if [ ! -r "$f" ]; then
    echo "mlink-entrypoint: $f is not mounted or not readable by uid $(id -u) (certificates are mounted, not baked in)" >&2
    exit 2
  fi
done
exec "/usr/local/bin/$bin" --config "$config" "$@"

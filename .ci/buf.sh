#!/usr/bin/env bash
# Install buf (the protobuf linter) from the npm registry and print the path of its binary on
# stdout; everything else goes to stderr. @bufbuild/buf ships the binary inside the registry's
# per-platform package (@bufbuild/buf-linux-x64, ...): nothing is downloaded from elsewhere.
# Fails (non-zero) without npm or the registry; .ci/run then warns and the lint test fails in CI.
set -euo pipefail
BUF_VERSION=${BUF_VERSION:-1.75.0}
prefix=${TWIN_BUF_PREFIX:-/tmp/twin-ci-buf}
bin="$prefix/node_modules/.bin/buf"
if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "$BUF_VERSION" ]; then
  echo "$bin"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "no npm to install buf with" >&2
  exit 1
fi
echo "installing buf $BUF_VERSION (npm @bufbuild/buf)" >&2
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-save --no-audit --no-fund --loglevel=error "@bufbuild/buf@$BUF_VERSION" >&2
"$bin" --version >&2
echo "$bin"

#!/usr/bin/env bash
# Install (Debian's package) a headless Chromium for the report's browser test; print the path of
# the browser binary on stdout. Everything else goes to stderr. Fails (non-zero) when no browser
# can be had, e.g. without apt-get or network; .ci/run then only warns and the test skips.
set -euo pipefail
find_browser() {
  local name
  for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then
      command -v "$name"
      return 0
    fi
  done
  return 1
}
if ! find_browser >/dev/null; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "no chromium and no apt-get to install it" >&2
    exit 1
  fi
  echo "installing chromium (apt)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
fi
find_browser

#!/usr/bin/env bash
# Installs Debian's headless Chromium for the report's browser test when it is missing and we are root.
set -u
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "browser-setup: could not install chromium; the browser test will be skipped" >&2
fi
exit 0

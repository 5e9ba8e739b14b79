#!/usr/bin/env bash
# Debian packages the tests need (idempotent): RabbitMQ server, Prometheus, Chromium,
# docker-compose (to validate the compose file; no engine runs here).
set -euo pipefail
packages=(rabbitmq-server prometheus chromium docker-compose)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

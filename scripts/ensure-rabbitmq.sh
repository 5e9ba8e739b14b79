#!/usr/bin/env bash
# Start RabbitMQ if 127.0.0.1:5672 does not answer, then wait until it does (up to 60 s).
set -euo pipefail
port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! port_open; then
  echo "starting rabbitmq-server"
  rabbitmq-server -detached || true
fi
for _ in $(seq 1 120); do
  if port_open && rabbitmqctl -q status >/dev/null 2>&1; then exit 0; fi
  sleep 0.5
done
echo "RabbitMQ did not come up on 127.0.0.1:5672" >&2
exit 1

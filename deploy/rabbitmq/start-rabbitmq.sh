#!/bin/sh
# Start RabbitMQ (the official image's entrypoint) with the user marginwatch, whose password is
# the secret file $RABBITMQ_PASSWORD_FILE (written into a conf.d file, never on a command line
# or in the environment). Refuses to start without it.
set -eu
file=${RABBITMQ_PASSWORD_FILE:-/run/secrets/rabbitmq.password}
if [ ! -s "$file" ]; then
  echo "start-rabbitmq: missing or empty password file $file" >&2
  exit 1
fi
umask 077
mkdir -p /etc/rabbitmq/conf.d
{
  echo "default_user = marginwatch"
  printf 'default_pass = %s\n' "$(tr -d '\r\n' < "$file")"
  echo "loopback_users = none"
} > /etc/rabbitmq/conf.d/90-marginwatch.conf
exec docker-entrypoint.sh rabbitmq-server

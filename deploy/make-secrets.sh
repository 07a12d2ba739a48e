#!/bin/sh
# Write the deployment's secrets under ./secrets (or $1): a random password per Redis user, each
# daemon's MARGINWATCH_REDIS_URL with its own user (for the single Redis, and for the Redis
# Cluster of the "cluster" profile), RabbitMQ's password and broker URL, the webhook secret and
# Grafana's admin password. Existing files are kept, so running it again changes nothing.
set -eu
dir=${1:-./secrets}
nodes="redis-node-1 redis-node-2 redis-node-3 redis-node-4 redis-node-5 redis-node-6"
mkdir -p "$dir"
chmod 700 "$dir"
umask 077
random() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
keep_or_write() { [ -s "$dir/$1" ] || printf '%s\n' "$2" > "$dir/$1"; }
for user in producer worker executor admin replica; do
  keep_or_write "redis-marginwatch-$user.password" "$(random)"
done
for user in producer worker executor admin; do
  password=$(tr -d '\r\n' < "$dir/redis-marginwatch-$user.password")
  keep_or_write "$user-redis-url" "redis://marginwatch-$user:$password@redis:6379/0"
  urls=""
  for node in $nodes; do
    urls="$urls${urls:+,}redis://marginwatch-$user:$password@$node:6379"
  done
  keep_or_write "cluster-$user-redis-url" "$urls"
done
keep_or_write rabbitmq.password "$(random)"
keep_or_write broker-url "amqp://marginwatch:$(tr -d '\r\n' < "$dir/rabbitmq.password")@rabbitmq:5672//"
keep_or_write webhook-secret "$(random)"
keep_or_write grafana-admin.password "$(random)"
echo "secrets in $dir"

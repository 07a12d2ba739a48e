#!/bin/sh
# Write the deployment's secrets under ./secrets (or $1): a random password per Redis user, each
# daemon's MARGINWATCH_REDIS_URL with its own user, the webhook secret and Grafana's admin
# password. Existing files are kept, so running it again changes nothing.
set -eu
dir=${1:-./secrets}
mkdir -p "$dir"
chmod 700 "$dir"
umask 077
random() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
keep_or_write() { [ -s "$dir/$1" ] || printf '%s\n' "$2" > "$dir/$1"; }
for user in producer worker executor admin; do
  keep_or_write "redis-marginwatch-$user.password" "$(random)"
  password=$(tr -d '\r\n' < "$dir/redis-marginwatch-$user.password")
  keep_or_write "$user-redis-url" "redis://marginwatch-$user:$password@redis:6379/0"
done
keep_or_write webhook-secret "$(random)"
keep_or_write grafana-admin.password "$(random)"
echo "secrets in $dir"

#!/bin/sh
# Start redis-server with the users of deploy/redis/users.acl, each with the password in its
# secret file ($REDIS_SECRETS/redis-<user>.password, e.g. redis-marginwatch-worker.password),
# stored as a SHA-256 hash in the ACL file Redis loads. Refuses to start when a file is missing
# or empty. With REDIS_MASTER_USER set, a replica authenticates to its primary as that user
# (masteruser/masterauth, written into a config file, never on the command line). Arguments are
# passed on to redis-server.
set -eu
secrets=${REDIS_SECRETS:-/run/secrets}
template=${REDIS_ACL_TEMPLATE:-/etc/redis/users.acl}
acl=${REDIS_ACL_FILE:-/data/users.acl}
umask 077
: > "$acl.tmp"
while IFS= read -r line; do
  case "$line" in
    "user default "*) printf '%s\n' "$line" >> "$acl.tmp" ;;
    "user "*)
      name=$(printf '%s' "$line" | cut -d' ' -f2)
      file="$secrets/redis-$name.password"
      if [ ! -s "$file" ]; then
        echo "start-redis: missing or empty password file $file" >&2
        exit 1
      fi
      hash=$(tr -d '\r\n' < "$file" | sha256sum | cut -d' ' -f1)
      printf '%s #%s\n' "$line" "$hash" >> "$acl.tmp" ;;
    *) ;;
  esac
done < "$template"
mv "$acl.tmp" "$acl"
config="$acl.conf"
printf 'aclfile %s\n' "$acl" > "$config"
if [ -n "${REDIS_MASTER_USER:-}" ]; then
  printf 'masteruser %s\nmasterauth %s\n' "$REDIS_MASTER_USER" \
    "$(tr -d '\r\n' < "$secrets/redis-$REDIS_MASTER_USER.password")" >> "$config"
fi
exec redis-server "$config" "$@"

#!/bin/sh
# Writes a Mosquitto password file from the environment, so the secrets live only in .env:
#
#   make-passwd.sh FILE
#
# $CARBONLINK_MQTT_USERS lists the usernames, separated by spaces. The password of each is
# in $MQTT_PASSWORD_<NAME>: the username in upper case, every character other than A-Z and
# 0-9 turned into "_" (cement-01 -> MQTT_PASSWORD_CEMENT_01). An empty or missing
# password stops the broker from starting, naming the variable.
set -eu
file=${1:?usage: make-passwd.sh FILE}
users=${CARBONLINK_MQTT_USERS:?make-passwd.sh: set CARBONLINK_MQTT_USERS to the MQTT usernames}
umask 077
mkdir -p "$(dirname "$file")"
partial="$file.partial"
: >"$partial"
for user in $users; do
  var="MQTT_PASSWORD_$(printf '%s' "$user" | tr 'a-z' 'A-Z' | tr -c 'A-Z0-9' '_')"
  # Safe: $var holds only A-Z, 0-9 and _.
  eval "password=\${$var:-}"
  if [ -z "$password" ]; then
    echo "make-passwd.sh: $var is empty: set it in .env (scripts/stack-env writes one)" >&2
    rm -f "$partial"
    exit 1
  fi
  mosquitto_passwd -b "$partial" "$user" "$password"
done
mv "$partial" "$file"
echo "make-passwd.sh: $(wc -l <"$file") users in $file"

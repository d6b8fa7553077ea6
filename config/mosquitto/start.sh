#!/bin/sh
# The broker container's command (docker-compose.yml): the dynamic-security file that the
# broker-access service wrote (the logins and their roles) made private to the broker's
# user, then Mosquitto itself. Runs as root, like the image's own entrypoint; Mosquitto
# drops to user mosquitto before it reads the file (eclipse-mosquitto/mosquitto#2925), and
# the plugin writes the file back when its roles change, so the user owns it.
set -eu
here=/mosquitto/config
auth=/mosquitto/auth
if [ ! -s "$auth/dynamic-security.json" ]; then
  echo "start.sh: $auth/dynamic-security.json is missing: the broker-access service writes it" >&2
  exit 1
fi
chown -R mosquitto:mosquitto "$auth"
chmod 0700 "$auth"
chmod 0600 "$auth/dynamic-security.json"
exec mosquitto -c "$here/mosquitto.conf"

#!/bin/sh
# The broker container's command (docker-compose.yml): the password file from the
# environment, the ACL from this directory, both private to the broker's user, then
# Mosquitto itself. Runs as root, like the image's own entrypoint; Mosquitto drops to
# user mosquitto before it reads the two files (eclipse-mosquitto/mosquitto#2925).
set -eu
here=/mosquitto/config
auth=/mosquitto/auth
sh "$here/make-passwd.sh" "$auth/passwd"
cp "$here/acl" "$auth/acl"
chown -R mosquitto:mosquitto "$auth"
chmod 0700 "$auth"
chmod 0600 "$auth/passwd" "$auth/acl"
exec mosquitto -c "$here/mosquitto.conf"

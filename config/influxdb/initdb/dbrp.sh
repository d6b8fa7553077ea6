#!/bin/bash
# Run once by the influxdb image, after DOCKER_INFLUXDB_INIT_MODE=setup has created the
# org, the bucket and the admin token (its entrypoint configures the influx CLI with that
# token and exports DOCKER_INFLUXDB_INIT_BUCKET_ID for scripts in this directory).
#
# Grafana's provisioned datasource queries InfluxQL for database "carbonlink"; InfluxDB 2.x
# answers that through a DBRP mapping from database/retention policy to a bucket
# (docs.influxdata.com/influxdb/v2/query-data/influxql/dbrp/). 2.7 derives a read-only
# "virtual" mapping carbonlink/autogen from the bucket name by itself; this makes it
# explicit. A failure only warns: the image wipes a half-initialised database when an
# init script fails, and the virtual mapping still serves Grafana.
set -uo pipefail
if influx v1 dbrp create --db "${DOCKER_INFLUXDB_INIT_BUCKET}" --rp autogen \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" --default; then
  echo "dbrp.sh: ${DOCKER_INFLUXDB_INIT_BUCKET}/autogen -> bucket ${DOCKER_INFLUXDB_INIT_BUCKET_ID}"
else
  echo "dbrp.sh: warning: no explicit DBRP mapping; InfluxQL relies on the virtual one" >&2
fi
exit 0

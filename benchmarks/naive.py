"""The naive baseline: what an MQTT-to-InfluxDB tutorial does, written fairly.

paho-mqtt's threaded ``loop_start``, ``json.loads`` in ``on_message``, the emissions of
each reading computed with the plant's factors (looked up once per meter), and one
InfluxDB write per message over a kept-alive HTTP connection. paho acknowledges each
QoS 1 message when ``on_message`` returns, so it is as durable as carbonlink's path.

Run by `benchmarks/run` as a subprocess, like the platform:
  python -m benchmarks.naive --config FILE --broker-port N --influxdb URL --database DB
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt

from benchmarks._common import HTTP_TIMEOUT_S, PLANT, TOPIC
from carbonlink.config import load_config
from carbonlink.emissions import FactorLibrary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--broker-port", type=int, required=True)
    parser.add_argument("--influxdb", required=True, help="http://HOST:PORT")
    parser.add_argument("--database", required=True)
    args = parser.parse_args()

    settings = load_config(args.config)
    plant = settings.plant(PLANT)
    factor_set = settings.factor_set(plant.id)
    library = FactorLibrary.builtin()
    factors = {
        m.id: factor_set.resolve(library, m.activity, m.unit, region=plant.grid_region)
        for m in plant.meters
        if m.activity is not None
    }
    http = httpx.Client(base_url=args.influxdb, timeout=HTTP_TIMEOUT_S, trust_env=False)
    params = {"db": args.database, "precision": "ms"}

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        data = json.loads(message.payload)
        columns = data["readings"]
        lines = []
        for meter, ts, value, unit in zip(
            columns["meter"], columns["ts"], columns["value"], columns["unit"], strict=True
        ):
            lines.append(f'activity,plant={PLANT},meter={meter} value={value},unit="{unit}" {ts}')
            factor = factors.get(meter)
            if factor is not None:
                e = factor.apply(value)
                lines.append(
                    f"emissions,plant={PLANT},meter={meter},activity={e.activity} "
                    f"co2_kg={e.co2_kg},ch4_kg={e.ch4_kg},n2o_kg={e.n2o_kg},"
                    f"co2e_kg={e.co2e_kg},biogenic_co2_kg={e.biogenic_co2_kg} {ts}"
                )
        http.post("/write", params=params, content="\n".join(lines))

    def on_connect(client: mqtt.Client, *_: object) -> None:
        client.subscribe(TOPIC, qos=1)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"naive-{args.database}")
    client.on_message = on_message
    client.on_connect = on_connect
    client.connect("127.0.0.1", args.broker_port)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client.loop_start()
    stop.wait()
    client.loop_stop()
    http.close()


if __name__ == "__main__":
    main()

"""A Sparkplug B edge node of another implementation than the agent's decoder: packets,
seq and bdSeq from esio-spb-builder (its own protobuf classes), published by paho-mqtt.
Run as its own process by the tests (``python -m tests.plant.edge_node ...``).

It behaves as an edge node with a primary host does (Sparkplug 3.0): NDEATH as its will,
births once the host's STATE says online, a rebirth on NCMD ``Node Control/Rebirth``,
and NDEATH when it stops. Every ``--every`` seconds it publishes an NDATA with the kiln's
coal (Double, t per interval) and a DDATA with the meter device's energy register
(Double, kWh), both by alias. After ``--skip-after`` data messages it skips one seq
number, as a lost message would; after the second, it sends one NDATA with an alias its
birth never declared. Each line it prints is what it did, for the test's log.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import paho.mqtt.client as mqtt
from esio_spb_builder import (
    DBirthPacket,
    DDataPacket,
    DynamicMetric,
    MetricDefinition,
    NBirthPacket,
    NDataPacket,
    NDeathPacket,
)
from esio_spb_builder.core import get_protocol
from esio_spb_builder.core import sparkplug_b_pb2 as pb

COAL = "Kiln/Coal feed"
ENERGY = "Energy register"
REBIRTH = "Node Control/Rebirth"


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--host", "--group", "--node", "--device", "--host-id"):
        parser.add_argument(name, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--every", type=float, default=1.5)
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--skip-after", type=int, default=3)
    parser.add_argument("--coal", type=float, default=0.005)
    parser.add_argument("--kwh-step", type=float, default=4.0)
    args = parser.parse_args()

    coal = DynamicMetric(MetricDefinition(COAL, 1, "Double", 0.0))
    energy = DynamicMetric(MetricDefinition(ENERGY, 2, "Double", 1000.0))
    rebirth = DynamicMetric(MetricDefinition(REBIRTH, 3, "Boolean", False))
    undeclared = DynamicMetric(MetricDefinition("Kiln/Secondary air", 99, "Double", 1.5))
    ready = threading.Event()
    births = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-{args.node}")
    death = NDeathPacket(args.group, args.node)
    # Serialized once: each serialization moves the library's bdSeq on to the next session.
    death_payload = death.serialize()
    client.will_set(death.topic, death_payload, qos=1)

    def birth() -> None:
        node = NBirthPacket(args.group, args.node, [coal, rebirth])
        client.publish(node.topic, node.serialize(), qos=0)
        device = DBirthPacket(args.group, args.node, args.device, [energy])
        client.publish(device.topic, device.serialize(), qos=0)
        print("births sent", flush=True)
        births.set()

    def on_connect(client: mqtt.Client, *_: object) -> None:
        client.subscribe(f"spBv1.0/{args.group}/NCMD/{args.node}", qos=1)
        client.subscribe(f"spBv1.0/STATE/{args.host_id}", qos=1)

    def on_message(client: mqtt.Client, _: object, message: mqtt.MQTTMessage) -> None:
        if "/STATE/" in message.topic:
            state = json.loads(message.payload)
            print(f"host state online={state['online']}", flush=True)
            if state["online"] and not ready.is_set():
                ready.set()
                birth()
            return
        command = pb.Payload.FromString(message.payload)
        if any(m.name == REBIRTH and m.boolean_value for m in command.metrics):
            print("rebirth requested", flush=True)
            birth()

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(args.host, args.port)
    client.loop_start()
    if not births.wait(60):
        raise SystemExit("the host application never came online")
    register = 1000.0
    for sent in range(args.count):
        time.sleep(args.every)
        gap = sent == args.skip_after
        if gap:
            get_protocol().get_seq_num()  # a message lost on the way: the host sees a gap
            births.clear()
            print("skipped a seq number", flush=True)
        coal.update_value(args.coal)
        register += args.kwh_step
        energy.update_value(register)
        node_data = NDataPacket(args.group, args.node, [coal])
        client.publish(node_data.topic, node_data.serialize(), qos=0)
        if sent == 1:
            # A metric its birth never declared (a misconfigured tag): in sequence, so
            # only this message is refused, and the data after it must still land.
            stray = NDataPacket(args.group, args.node, [undeclared])
            client.publish(stray.topic, stray.serialize(), qos=0)
            print("undeclared alias sent", flush=True)
        device_data = DDataPacket(args.group, args.node, args.device, [energy])
        client.publish(device_data.topic, device_data.serialize(), qos=0).wait_for_publish(10)
        print(f"data sent: coal {args.coal} t, register {register} kWh", flush=True)
        if gap and not births.wait(60):
            raise SystemExit("no rebirth requested after the gap")
    client.publish(death.topic, death_payload, qos=1).wait_for_publish(10)
    print("death sent", flush=True)
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    main()

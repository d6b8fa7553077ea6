"""The InfluxDB 1.x store's write path in a process of its own, writing as fast as the
server takes it, with the process's RSS sampled: what test_write_memory.py measures.

  python -m tests.storage.write_soak STORE_URL SECONDS

Two threads call ``write_batch`` with 10,000-reading batches (20,000 lines: four
requests each, two of them at once), as the platform's store threads do. It prints one
JSON object: ``{"writes": N, "samples": [[t_s, rss_bytes], ...]}``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Final

from carbonlink.storage import Emission, StoredBatch, StoredReading, open_store

T0: Final = 1_795_420_800_000
STEP_MS: Final = 1_000
METERS: Final = ("gas", "power", "steam", "coal", "diesel")
ROWS: Final = 2_000  # x 5 meters: 10,000 readings, the platform's write_batch_max
WRITERS: Final = 2  # the platform's write_concurrency
SAMPLE_S: Final = 0.5


def batch() -> StoredBatch:
    readings = []
    for row in range(ROWS):
        for k, meter in enumerate(METERS):
            co2e = 10.0 + (row * 7 + k) % 97 / 10
            emission = Emission(
                activity="natural_gas", source="fuel", scope=1, category="1.A.2",
                factor_set="soak", factor_version="1", gwp="AR5",
                converted_amount=co2e / 56_100, converted_unit="TJ",
                co2_kg=co2e * 0.99, ch4_kg=0.001, n2o_kg=0.0001, co2e_kg=co2e,
                biogenic_co2_kg=0.0, u95_factor_lower_kg=co2e * 0.03,
                u95_factor_upper_kg=co2e * 0.04, u95_meter_kg=co2e * 0.01,
            )  # fmt: skip
            ts = T0 + row * STEP_MS
            reading = StoredReading(
                "soak-plant", meter, ts, co2e / 2, "Nm3", STEP_MS, "measured", emission
            )
            readings.append(reading)
    return StoredBatch.from_readings(readings)


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    url, seconds = sys.argv[1], float(sys.argv[2])
    store = open_store(url)
    data = batch()
    writes = 0
    lock = threading.Lock()
    began = time.monotonic()
    stop = began + seconds

    def write() -> None:
        nonlocal writes
        while time.monotonic() < stop:
            store.write_batch(data)  # the same points again: InfluxDB overwrites them
            with lock:
                writes += 1

    threads = [threading.Thread(target=write, daemon=True) for _ in range(WRITERS)]
    for thread in threads:
        thread.start()
    samples = []
    while any(thread.is_alive() for thread in threads):
        samples.append((time.monotonic() - began, rss_bytes()))
        time.sleep(SAMPLE_S)  # a sampling period, not a wait for anything
    store.close()
    print(json.dumps({"writes": writes, "samples": samples}))


if __name__ == "__main__":
    main()

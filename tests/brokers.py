"""Private NATS and RabbitMQ servers with their MQTT listeners, for the tests that show
what carbonlink does on brokers other than Mosquitto (Debian 12: NATS 2.9, RabbitMQ 3.10).

Like tests/servers.py, each runs from a temp dir on free ports on 127.0.0.1: the system
NATS and RabbitMQ (and their epmd) run on the default ports and are never touched.
Both speak MQTT 3.1.1 only, and both accept a ``$share/GROUP/...`` subscription as a
plain filter that no topic matches.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.servers import (
    HOST,
    STOP_TIMEOUT_S,
    ServerError,
    _die_with_parent,
    _port_accepts,
    _Server,
    find_binary,
    free_port,
)
from tests.waiting import WaitTimeoutError, wait_for

EPMD_START_S = 10.0  # epmd is a small C program: it listens at once on a quiet machine


class NatsServer(_Server):
    """nats-server with JetStream (its MQTT listener needs it) and an MQTT listener;
    ``port`` and ``url`` are the MQTT listener's."""

    name = "nats-server"
    binary = "nats-server"
    scheme = "mqtt"

    def __init__(self, directory: Path | str) -> None:
        super().__init__(directory)
        self.client_port = free_port()
        self.config_path = self.directory / "nats.conf"

    def _write_config(self) -> list[str]:
        store = self.directory / "jetstream"
        self.config_path.write_text(
            # The MQTT listener refuses to start without a server_name and JetStream.
            f'server_name: "carbonlink_test_{self.client_port}"\n'
            f"listen: {HOST}:{self.client_port}\n"
            f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, '
            "max_file_store: 256MB }\n"
            f"mqtt {{ host: {HOST}, port: {self._port} }}\n"
        )
        return ["-c", str(self.config_path)]

    def _is_ready(self) -> bool:
        return _port_accepts(self._port)


class RabbitMQServer(_Server):
    """A RabbitMQ node of its own (node name, Mnesia dir, config, enabled plugins, node
    and distribution ports, and an epmd on a free port) with the rabbitmq_mqtt plugin;
    ``port`` and ``url`` are its MQTT listener's. Anonymous MQTT logs in as guest."""

    name = "rabbitmq"
    # Not /usr/sbin/rabbitmq-server: as root, that wrapper switches to the rabbitmq user,
    # who cannot write the test's directory, and drops the environment.
    binary = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    scheme = "mqtt"
    own_process_group = True  # rabbitmq-server is a shell script in front of the VM
    start_timeout_s = 90.0  # the Erlang VM and Mnesia take ~20 s on a busy 2-core box

    def __init__(self, directory: Path | str) -> None:
        super().__init__(directory)
        self.node_port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.nodename = f"carbonlink-test-{self._port}@localhost"
        self._epmd: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> list[str]:
        (self.directory / "home").mkdir(exist_ok=True)
        (self.directory / "rabbitmq.conf").write_text(
            "listeners.tcp = none\n"  # no AMQP listener: only MQTT is tested
            f"mqtt.listeners.tcp.default = {HOST}:{self._port}\n"
            "mqtt.allow_anonymous = true\n"
        )
        (self.directory / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        return []

    def _environment(self) -> dict[str, str]:
        d = self.directory
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        return env | {
            "HOME": str(d / "home"),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),  # absent
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),  # absent: not /etc's
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_NODE_PORT": str(self.node_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
        }

    def _log_paths(self) -> list[Path]:
        return [self.output_path, self.directory / "log" / f"{self.nodename}.log"]

    def _is_ready(self) -> bool:
        return _port_accepts(self._port)

    def start(self) -> None:
        # An epmd of its own, in the foreground so that it is our child and dies with us.
        self._epmd = subprocess.Popen(
            [find_binary("epmd"), "-port", str(self.epmd_port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        try:
            wait_for(lambda: _port_accepts(self.epmd_port), "epmd to listen", EPMD_START_S)
        except WaitTimeoutError:
            self._stop_epmd()
            raise ServerError(f"epmd did not listen on port {self.epmd_port}") from None
        try:
            super().start()
        except BaseException:
            self._stop_epmd()
            raise

    def stop(self) -> None:
        """SIGTERM to the whole group (script, VM), then SIGKILL whatever is left."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_TIMEOUT_S)
        self._stop_epmd()

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self._stop_epmd()

    def _stop_epmd(self) -> None:
        if self._epmd is not None:
            self._epmd.kill()
            self._epmd.wait()
            self._epmd = None

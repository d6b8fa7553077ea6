"""Private Mosquitto and InfluxDB 1.x servers for the tests.

Each server is a real subprocess with its config, data and log in its own directory
and listens on 127.0.0.1 on a port nobody else uses, so tests never touch services
that already run on the machine (a system Mosquitto on 1883, for instance).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from tests.waiting import WaitAbortedError, WaitTimeoutError, wait_for

HOST = "127.0.0.1"

# Module-level so a test can shrink them with monkeypatch (they are read at call time).
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_S = 0.5
HTTP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 40

# Debian installs daemons in sbin, which is not on an ordinary user's PATH.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_INSTALL_HINT = "run scripts/test (it installs the test services), or scripts/install-services"

# Binding port 0 twice in a row may return the same port; remember what was handed out.
_ports_handed_out: set[int] = set()


class ServerError(RuntimeError):
    """A test server could not be found, started, stopped or queried."""


class ServerNotInstalledError(ServerError):
    """The server's binary is not installed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and was not handed out before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port


def find_binary(name: str) -> str:
    search_path = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_BIN_DIRS])
    found = shutil.which(name, path=search_path)
    if found is None:
        raise ServerNotInstalledError(f"{name} is not installed: {_INSTALL_HINT}")
    return found


def _die_with_parent() -> None:
    # Runs in the child before exec: if pytest itself is killed, the kernel kills the
    # server too instead of leaving it listening forever. The kernel ties this to the
    # *thread* that started the server: call start()/restart() from the main thread, not
    # through asyncio.to_thread, or the server dies when that worker thread ends.
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


class _Server:
    """A server subprocess with its files in ``directory``; subclasses say how to run it."""

    name = "server"
    binary = ""
    scheme = ""
    # A server run by a wrapper script (RabbitMQ) gets a process group of its own, so
    # that stopping it reaches the real server behind the script.
    own_process_group = False
    start_timeout_s: float | None = None  # None: START_TIMEOUT_S

    def __init__(self, directory: Path | str, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self.output_path = self.directory / f"{self.name}.out"

    # --- what subclasses provide ---------------------------------------------------

    def _write_config(self) -> list[str]:
        """Write the config file and return the command line."""
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _log_paths(self) -> list[Path]:
        return [self.output_path]

    # --- public API ----------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"{self.scheme}://{HOST}:{self._port}"

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.is_running and self._process else None

    def start(self) -> None:
        """Start the server and return once it accepts clients."""
        if self.is_running:
            raise ServerError(f"{self.name} on port {self._port} is already running")
        binary = find_binary(self.binary)
        command = [binary, *self._write_config()]
        env = self._environment()
        preexec = _die_with_parent if sys.platform == "linux" else None
        with self.output_path.open("ab") as output:
            self._process = subprocess.Popen(
                command,
                cwd=self.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec,
                start_new_session=self.own_process_group,
            )
        self._wait_until_ready()

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), so the server can save its state; no-op if stopped."""
        if self._process is None:
            return
        process, self._process = self._process, None
        if process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise ServerError(
                f"{self.name} on port {self._port} ignored SIGTERM for {STOP_TIMEOUT_S}s "
                f"and was killed\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """Kill abruptly (SIGKILL), like a crash: unsaved state is lost."""
        if self._process is None:
            return
        process, self._process = self._process, None
        if process.poll() is None:
            process.kill()
        process.wait()

    def restart(self) -> None:
        """Stop gracefully, then start again on the same port with the same data."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        parts = []
        for path in self._log_paths():
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- last lines of {path} ---\n" + "\n".join(text))
        return "\n".join(parts) or f"(no log files in {self.directory})"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self.kill()  # no-op unless stop() failed half-way

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<{type(self).__name__} {self.url} {state} in {self.directory}>"

    # --- internals -----------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        return dict(os.environ)

    def _wait_until_ready(self) -> None:
        process = self._process
        assert process is not None

        def exited() -> str | None:
            code = process.poll()
            return None if code is None else f"exited with code {code}"

        what = f"{self.name} to accept clients on port {self._port}"
        timeout = self.start_timeout_s or START_TIMEOUT_S
        try:
            wait_for(self._is_ready, what, timeout, abort_if=exited)
        except WaitAbortedError:
            self._process = None
            raise ServerError(
                f"{self.name} exited with code {process.returncode} while starting on port "
                f"{self._port}\n{self.log_tail()}"
            ) from None
        except WaitTimeoutError:
            self.kill()
            raise ServerError(
                f"{self.name} did not become ready on port {self._port} within "
                f"{timeout}s\n{self.log_tail()}"
            ) from None


class MosquittoServer(_Server):
    """A private Mosquitto 2.x broker with persistence (MQTT 3.1.1 and 5).

    By default it is open to anonymous clients. With ``config_file`` it runs on a
    deployment's own config (``config/mosquitto/mosquitto.conf``) instead: every line is
    kept except those that name a place (:data:`PLACE_KEYS`), which point into this
    server's directory, at ``password_file`` and ``acl_file`` when given, and at Debian's
    dynamic-security plugin with ``dynsec_file`` as its file.
    """

    name = "mosquitto"
    binary = "mosquitto"
    scheme = "mqtt"

    PLACE_KEYS = frozenset(
        {"user", "listener", "port", "bind_address", "persistence_location", "log_dest"}
        | {"password_file", "acl_file", "plugin", "plugin_opt_config_file"}
    )
    # Where Debian's mosquitto package puts the plugin (the container image: /usr/lib/).
    DYNSEC_PLUGINS = (
        "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
    )

    def __init__(
        self,
        directory: Path | str,
        port: int | None = None,
        extra_config: Sequence[str] = (),
        *,
        config_file: Path | None = None,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        dynsec_file: Path | None = None,
    ) -> None:
        super().__init__(directory, port)
        self.extra_config = list(extra_config)
        self.config_file = config_file
        self.password_file = password_file
        self.acl_file = acl_file
        self.dynsec_file = dynsec_file
        self.config_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self.persistence_dir = self.directory / "persistence"
        self.persistence_dir.mkdir(exist_ok=True)

    def _write_config(self) -> list[str]:
        lines = [
            # Started as root, Mosquitto drops to user "mosquitto", which cannot write
            # our temp dir; naming the current user keeps it as is.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            f"listener {self._port} {HOST}",
            f"persistence_location {self.persistence_dir}/",  # must end with a slash
            f"log_dest file {self.log_path}",
            "log_type all",
            *(self._deployment_lines() if self.config_file else self._test_lines()),
            *self.extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        return ["-c", str(self.config_path)]

    @staticmethod
    def _test_lines() -> list[str]:
        return [
            "allow_anonymous true",
            "persistence true",
            "connection_messages true",
            # Mosquitto's default (1000) silently drops QoS 1 messages queued for a
            # subscriber that lags behind a burst (a --speed max backfill, say). carbonlink's
            # documented broker setting is unlimited; the tests run with what we document.
            "max_queued_messages 0",
        ]

    def _deployment_lines(self) -> list[str]:
        assert self.config_file is not None
        kept = []
        for line in self.config_file.read_text().splitlines():
            key = line.split(maxsplit=1)[0] if line.strip() else ""
            if key.startswith("#") or key not in self.PLACE_KEYS:
                kept.append(line)
            elif key in ("password_file", "acl_file"):
                replacement = self.password_file if key == "password_file" else self.acl_file
                if replacement is None:
                    raise ServerError(f"{self.config_file} names a {key}: pass {key}=PATH")
                kept.append(f"{key} {replacement}")
            elif key == "plugin":
                kept.append(f"plugin {self._dynsec_plugin()}")
            elif key == "plugin_opt_config_file":
                if self.dynsec_file is None:
                    raise ServerError(f"{self.config_file} names a {key}: pass dynsec_file=PATH")
                kept.append(f"{key} {self.dynsec_file}")
        return kept

    def _dynsec_plugin(self) -> str:
        for path in self.DYNSEC_PLUGINS:
            if Path(path).is_file():
                return path
        raise ServerNotInstalledError(f"Mosquitto's dynamic-security plugin: {_INSTALL_HINT}")

    def _is_ready(self) -> bool:
        return _port_accepts(self._port)

    def _log_paths(self) -> list[Path]:
        return [self.output_path, self.log_path]


class InfluxDBServer(_Server):
    """A private InfluxDB 1.x server, spoken to over its HTTP API (HTTPS with ``tls``:
    (certificate, private key, CA bundle) files)."""

    name = "influxdb"
    binary = "influxd"
    scheme = "http"

    def __init__(
        self,
        directory: Path | str,
        port: int | None = None,
        extra_config: Sequence[str] = (),
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        super().__init__(directory, port)
        # InfluxDB also listens on a port for backup/restore; it must be private too.
        self.rpc_port = free_port()
        self.extra_config = list(extra_config)
        self.config_path = self.directory / "influxdb.conf"
        self.tls = tls
        if tls is not None:
            self.scheme = "https"

    @property
    def _verify(self) -> ssl.SSLContext | bool:
        # The harness trusts the test CA, never "no verification".
        return ssl.create_default_context(cafile=self.tls[2]) if self.tls is not None else True

    def store_url(self, database: str) -> str:
        scheme = "influxdb+https" if self.tls is not None else "influxdb"
        return f"{scheme}://{HOST}:{self._port}/{database}"

    def create_database(self, name: str) -> None:
        self.query("", f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        self.query("", f'DROP DATABASE "{name}"')

    def query(self, database: str, influxql: str) -> dict[str, Any]:
        """Run InfluxQL and return the decoded JSON; statement errors raise ServerError."""
        params = {"q": influxql, "epoch": "ms"}
        if database:
            params["db"] = database
        # POST, because GET refuses statements that change anything (CREATE, DROP).
        response = self._post("/query", params=params)
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise ServerError(
                f"InfluxDB query {influxql!r} failed ({response.status_code}): {response.text}"
            ) from None
        errors = [body.get("error")] + [r.get("error") for r in body.get("results", [])]
        errors = [e for e in errors if e]
        if response.status_code >= 400 or errors:
            raise ServerError(f"InfluxDB query {influxql!r} failed: {errors or response.text}")
        return body

    def write(self, database: str, lines: str | Sequence[str], precision: str = "ms") -> None:
        """Write line protocol; raises ServerError unless InfluxDB accepts all of it."""
        data = lines if isinstance(lines, str) else "\n".join(lines)
        response = self._post(
            "/write", params={"db": database, "precision": precision}, content=data.encode()
        )
        if response.status_code != httpx.codes.NO_CONTENT:
            raise ServerError(f"InfluxDB write failed ({response.status_code}): {response.text}")

    def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        # trust_env=False: an HTTP(S)_PROXY in the environment must not capture localhost.
        with httpx.Client(
            base_url=self.url, timeout=HTTP_TIMEOUT_S, trust_env=False, verify=self._verify
        ) as client:
            return client.post(path, **kwargs)

    def _write_config(self) -> list[str]:
        data = self.directory
        lines = [
            "reporting-disabled = true",
            f'bind-address = "{HOST}:{self.rpc_port}"',
            "[meta]",
            f'  dir = "{data / "meta"}"',
            "[data]",
            f'  dir = "{data / "data"}"',
            f'  wal-dir = "{data / "wal"}"',
            "  query-log-enabled = false",
            "[http]",
            f'  bind-address = "{HOST}:{self._port}"',
            "  log-enabled = false",
            *(
                [
                    "  https-enabled = true",
                    f'  https-certificate = "{self.tls[0]}"',
                    f'  https-private-key = "{self.tls[1]}"',
                ]
                if self.tls is not None
                else []
            ),
            "[monitor]",
            "  store-enabled = false",
            *self.extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        return ["run", "-config", str(self.config_path)]

    def _environment(self) -> dict[str, str]:
        # INFLUXDB_* variables override the config file; the test config must win.
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def _is_ready(self) -> bool:
        try:
            with httpx.Client(
                timeout=CONNECT_TIMEOUT_S, trust_env=False, verify=self._verify
            ) as client:
                return client.get(f"{self.url}/ping").status_code == httpx.codes.NO_CONTENT
        except httpx.HTTPError:
            return False


class NatsServer(_Server):
    """One nats-server with JetStream (file storage in its directory), optionally a node
    of a cluster: ``routes`` are the cluster ports of every node, its own included."""

    name = "nats"
    binary = "nats-server"
    scheme = "nats"

    def __init__(
        self,
        directory: Path | str,
        port: int | None = None,
        *,
        server_name: str = "n1",
        cluster: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[int] = (),
    ) -> None:
        super().__init__(directory, port)
        self.server_name = server_name
        self.cluster = cluster
        self.cluster_port = cluster_port if cluster_port is not None else free_port()
        self.routes = list(routes)
        self.monitor_port = free_port()
        self.config_path = self.directory / "nats.conf"

    def _write_config(self) -> list[str]:
        lines = [
            f"server_name: {self.server_name}",
            f"listen: {HOST}:{self._port}",
            f"http: {HOST}:{self.monitor_port}",
            f'jetstream {{ store_dir: "{self.directory / "js"}" }}',
        ]
        if self.cluster is not None:
            routes = ", ".join(f"nats-route://{HOST}:{p}" for p in self.routes)
            lines.append(
                f"cluster {{ name: {self.cluster}, listen: {HOST}:{self.cluster_port}, "
                f"routes: [{routes}] }}"
            )
        self.config_path.write_text("\n".join(lines) + "\n")
        return ["-c", str(self.config_path)]

    def _is_ready(self) -> bool:
        # Accepting clients is enough here: a cluster's JetStream is ready only once a
        # quorum of nodes is up, which NatsCluster waits for.
        return _port_accepts(self._port)

    def jetstream_healthy(self) -> bool:
        try:
            with httpx.Client(timeout=CONNECT_TIMEOUT_S, trust_env=False) as client:
                answer = client.get(f"http://{HOST}:{self.monitor_port}/healthz")
                return answer.status_code == httpx.codes.OK
        except httpx.HTTPError:
            return False


class NatsCluster:
    """A JetStream cluster of ``size`` nats-server nodes on loopback ports, each in its
    own directory. ``nodes[i].kill()`` crashes one; ``nodes[i].start()`` brings it back
    with its data."""

    def __init__(self, directory: Path, size: int = 3, name: str = "carbonlink-test") -> None:
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsServer(directory / f"n{i + 1}", server_name=f"n{i + 1}", cluster=name,
                       cluster_port=cluster_ports[i], routes=cluster_ports)
            for i in range(size)
        ]  # fmt: skip

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        self.wait_healthy()

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        """Until every running node says JetStream is healthy (a meta leader is elected)."""
        try:
            wait_for(
                lambda: all(n.jetstream_healthy() for n in self.nodes if n.is_running),
                "every NATS node to report JetStream healthy",
                timeout_s,
            )
        except WaitTimeoutError:
            tails = "\n".join(n.log_tail() for n in self.nodes)
            raise ServerError(f"the NATS cluster did not become healthy\n{tails}") from None

    def stop(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            finally:
                node.kill()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "HOST",
    "InfluxDBServer",
    "MosquittoServer",
    "NatsCluster",
    "NatsServer",
    "ServerError",
    "ServerNotInstalledError",
    "free_port",
]

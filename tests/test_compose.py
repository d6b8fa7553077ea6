"""docker-compose.yml against the code.

Nothing on the test machines runs Docker, so this reads the compose file and checks what
it names: each carbonlink command parses with the CLI's own click parser, each file it
names exists in the repository (through the bind mounts), each config file loads, each
variable is in .env.example, each container has the variables its code reads, each port
is published on 127.0.0.1 only, the plants match config/plants/, and the pieces that must
agree (broker address and logins, bucket and org, ports and healthchecks, Grafana's
paths) do. A failure names the service and the problem.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import click
import pytest
import yaml
from click.core import ParameterSource

from carbonlink.cli import main
from carbonlink.cli._common import parse_duration_s, parse_host_port
from carbonlink.config import CONFIG_ENV_VAR, ID_PATTERN, Settings, load_config
from carbonlink.coordination import load_policy
from carbonlink.errors import CarbonlinkError
from carbonlink.mqtt.access import grant
from carbonlink.storage import INFLUXDB_PASSWORD_ENV, INFLUXDB_TOKEN_ENV, open_store
from tests.stack import (
    COMPOSE_FILE,
    MOSQUITTO_DIR,
    REPO,
    USERS_VARIABLE,
    carbonlink_services,
    compose,
    env_example,
    environment,
    filled_env,
    interpolate,
    mqtt_users,
    password_variable,
    services,
    strings,
    variables,
)

DOCKERFILE: Final = REPO / "Dockerfile"
PLANTS: Final = sorted(p.stem for p in (REPO / "config" / "plants").glob("*.yaml"))
PLATFORM_USER: Final = "carbonlink.platform.{worker}"
METERS_USER: Final = "{plant}.meters"
COORDINATION_USER: Final = "carbonlink.coordination"
LOCALHOST: Final = "127.0.0.1"


# --- reading the files -------------------------------------------------------------------


def _dockerfile() -> tuple[PurePosixPath, dict[str, str], list[list[str]]]:
    """WORKDIR, ENV and the COPY instructions' arguments of the Dockerfile."""
    workdir, env, copies = PurePosixPath("/"), {}, []
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        instruction, args = words[0].upper(), words[1:]
        if instruction == "WORKDIR":
            workdir = workdir / args[0]
        elif instruction == "ENV":
            env.update(dict(a.split("=", 1) for a in args))
        elif instruction == "COPY":
            copies.append(args)
    return workdir, env, copies


WORKDIR, IMAGE_ENV, COPIES = _dockerfile()


@dataclass(frozen=True)
class Mount:
    source: str
    target: PurePosixPath
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/"))


def mounts(service: dict[str, Any]) -> list[Mount]:
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            found.append(Mount(source, PurePosixPath(target), "ro" in mode))
        else:
            found.append(
                Mount(
                    volume["source"],
                    PurePosixPath(volume["target"]),
                    volume.get("read_only", False),
                )
            )
    return found


def container_path(path: str) -> PurePosixPath:
    return WORKDIR / path  # an absolute path stays as it is


def repo_path(service: dict[str, Any], path: str | PurePosixPath) -> Path | None:
    """Where a path inside the container comes from in the repository, through a bind mount."""
    target = container_path(str(path))
    for mount in sorted(mounts(service), key=lambda m: len(m.target.parts), reverse=True):
        if mount.is_bind and (target == mount.target or mount.target in target.parents):
            return (REPO / mount.source / target.relative_to(mount.target)).resolve()
    return None


def in_named_volume(service: dict[str, Any], path: str | PurePosixPath) -> bool:
    target = container_path(str(path))
    return any(
        not m.is_bind and (target == m.target or m.target in target.parents)
        for m in mounts(service)
    )


def container_env(service: dict[str, Any]) -> dict[str, str]:
    """The environment its processes see: the image's ENV, then the compose file's."""
    env = dict(IMAGE_ENV)
    env.update({k: interpolate(v, filled_env()) for k, v in environment(service).items()})
    return env


@dataclass(frozen=True)
class Invocation:
    service: str
    command: str
    params: dict[str, Any]
    given: frozenset[str]  # parameters set on the command line, not defaulted


def invocation(name: str, service: dict[str, Any]) -> Invocation:
    """The service's command, parsed by carbonlink's own click parser (not run)."""
    command = service.get("command")
    assert isinstance(command, list), f"{name}: command must be a list (exec form)"
    assert command[0] == "carbonlink", f"{name}: command must start with carbonlink"
    args = [interpolate(str(a), filled_env()) for a in command[1:]]
    try:
        group = main.make_context("carbonlink", list(args), resilient_parsing=False)
        # A group leaves the subcommand's arguments in .args, right after its name.
        sub_name = args[len(args) - len(group.args) - 1]
        cmd_name, cmd, rest = main.resolve_command(group, [sub_name, *group.args])
        assert cmd is not None
        assert cmd_name is not None
        sub = cmd.make_context(cmd_name, rest, parent=group, resilient_parsing=False)
    except click.ClickException as exc:
        problem = exc.format_message()
    else:
        problem = None
    if problem is not None:
        pytest.fail(f"{name}: `carbonlink {' '.join(args)}`: {problem}")
    given = frozenset(
        p for p in sub.params if sub.get_parameter_source(p) is ParameterSource.COMMANDLINE
    )
    return Invocation(name, cmd_name, dict(sub.params), given)


def invocations() -> list[Invocation]:
    return [invocation(n, s) for n, s in carbonlink_services().items()]


def by_command(command: str) -> list[Invocation]:
    return [i for i in invocations() if i.command == command]


def settings_of(name: str) -> Settings:
    service = services()[name]
    run = invocation(name, service)
    chosen = run.params.get("config_path") or container_env(service).get(CONFIG_ENV_VAR)
    assert chosen, f"{name}: no --config and no ${CONFIG_ENV_VAR}"
    path = repo_path(service, str(chosen))
    assert path is not None, f"{name}: config {chosen} is not in a bind mount from the repository"
    try:
        return load_config(path)
    except CarbonlinkError as exc:
        problem = str(exc)
    pytest.fail(f"{name}: {chosen} does not load: {problem}")


def service_users() -> list[str]:
    """The stack's logins that are no plant's (the platform workers, coordination, monitor)."""
    return [user for user in mqtt_users() if "." in user and not user.endswith(".meters")]


def mosquitto_conf() -> dict[str, str]:
    conf = {}
    for line in (MOSQUITTO_DIR / "mosquitto.conf").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf[key] = value.strip()
    return conf


def expected_user(name: str, run: Invocation) -> str:
    """The MQTT identity each role must log in with (docs/architecture.md, "Access control")."""
    if run.command == "platform":
        return PLATFORM_USER.format(worker=run.params["worker"])
    if run.command == "coordinate":
        return COORDINATION_USER
    if run.command == "agent":
        return str(run.params["plant_id"])
    if run.command == "simulate":
        return METERS_USER.format(plant=run.params["plants"])
    pytest.fail(f"{name}: no MQTT identity known for `carbonlink {run.command}`")


def ports(service: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    """(host ip, host port, container port) of each published port, interpolated."""
    found: list[tuple[str | None, str, str]] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            published = interpolate(str(port.get("published", "")), filled_env())
            found.append((port.get("host_ip"), published, str(port["target"])))
            continue
        parts = interpolate(str(port), filled_env()).split(":")
        if len(parts) == 3:
            found.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            found.append((None, parts[0], parts[1]))
        else:
            found.append((None, "", parts[0]))
    return found


CARBONLINK = sorted(carbonlink_services())


# --- the tests ---------------------------------------------------------------------------


def test_the_stack_has_its_services_and_one_image() -> None:
    names = set(services())
    assert {"mosquitto", "influxdb", "grafana", "platform-1", "platform-2", "coordination"} <= names
    for name, service in carbonlink_services().items():
        assert service.get("build") == ".", f"{name}: carbonlink services build the Dockerfile"
    assert DOCKERFILE.is_file()
    unknown = [n for n, s in services().items() if "image" not in s and "build" not in s]
    assert not unknown, f"services without an image: {unknown}"


@pytest.mark.parametrize("name", CARBONLINK)
def test_command_parses_as_a_carbonlink_invocation(name: str) -> None:
    run = invocation(name, services()[name])
    if "http" in run.given:
        parse_host_port(run.params["http"])
    if run.params.get("broker"):
        pytest.fail(f"{name}: --broker overrides broker.url; set it in the config file")


@pytest.mark.parametrize("name", CARBONLINK)
def test_config_loads_and_the_broker_login_is_provided(name: str) -> None:
    service, run = services()[name], invocation(name, services()[name])
    settings = settings_of(name)
    broker = urlsplit(settings.services.broker.url)
    assert broker.hostname in services(), f"{name}: broker host {broker.hostname} is no service"
    listener = mosquitto_conf()["listener"].split()[0]
    assert str(broker.port or 1883) == listener, f"{name}: broker port is not {listener}"
    env = container_env(service)
    config = settings.services.broker
    assert config.username_env, f"{name}: the config names no username variable"
    assert config.password_env, f"{name}: the config names no password variable"
    for var in (config.username_env, config.password_env):
        assert env.get(var), f"{name}: ${var} (named by the config) is not set"
    user = env[config.username_env]
    assert user == expected_user(name, run), f"{name}: logs in as {user}"
    assert user in mqtt_users(), f"{name}: {user} is not in the broker's {USERS_VARIABLE}"
    written = environment(service)[config.password_env]
    broker_side = environment(services()["broker-access"]).get(password_variable(user), "")
    assert {v for v, _ in variables(written)} == {v for v, _ in variables(broker_side)} != set(), (
        f"{name}: ${config.password_env} is {written!r}, but the broker takes {user}'s "
        f"password from {broker_side!r}"
    )


@pytest.mark.parametrize("name", CARBONLINK)
def test_state_lives_in_a_named_volume(name: str) -> None:
    service, run = services()[name], invocation(name, services()[name])
    settings = settings_of(name)
    state: list[str] = []
    if run.command == "agent":
        state.append(settings.services.agent.outbox_dir)
    if run.command == "platform":
        state.append(str(run.params["spill"] or settings.services.platform.spill_path))
    if run.command == "coordinate":
        state.append(str(run.params["ledger_path"] or settings.services.coordination.journal))
    if run.command == "platform":
        # The workers serve the coordinator's journal: it must be in their volume too.
        state.append(settings.services.coordination.journal)
    for path in state:
        assert PurePosixPath(path).is_absolute(), f"{name}: {path} must be absolute"
        assert in_named_volume(service, path), f"{name}: {path} is in no named volume"


def test_stores_and_their_tokens() -> None:
    influx = environment(services()["influxdb"])
    users = [i for i in invocations() if i.command in ("platform", "coordinate")]
    assert users
    for run in users:
        url = run.params.get("store_override") or settings_of(run.service).services.platform.store
        parts = urlsplit(url)
        env = container_env(services()[run.service])
        assert parts.scheme == "influxdb2", f"{run.service}: store {url} is not InfluxDB 2.x"
        assert (parts.hostname, parts.port) == ("influxdb", 8086), f"{run.service}: store {url}"
        assert parts.path.strip("/") == influx["DOCKER_INFLUXDB_INIT_BUCKET"], run.service
        assert parse_qs(parts.query)["org"] == [influx["DOCKER_INFLUXDB_INIT_ORG"]], run.service
        assert env.get(INFLUXDB_TOKEN_ENV), f"{run.service}: ${INFLUXDB_TOKEN_ENV} is not set"
        token = set(variables(environment(services()[run.service])[INFLUXDB_TOKEN_ENV]))
        assert token == set(variables(influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"])), run.service
        open_store(url).close()  # a malformed URL raises here


def test_one_agent_and_one_simulator_per_plant() -> None:
    agents = sorted(str(i.params["plant_id"]) for i in by_command("agent"))
    simulated = sorted(str(i.params["plants"]) for i in by_command("simulate"))
    assert agents == PLANTS, f"agents for {agents}, plants in config/plants: {PLANTS}"
    assert simulated == PLANTS, f"simulators for {simulated}, plants in config/plants: {PLANTS}"
    for run in by_command("simulate"):
        assert float(run.params["speed"]) == 1.0, f"{run.service}: agents check a wall-clock skew"
        assert "," not in str(run.params["plants"]), f"{run.service}: one plant per login"


def test_two_platform_workers_share_one_secret_group() -> None:
    workers = by_command("platform")
    assert len(workers) == 2, f"platform workers: {[w.service for w in workers]}"
    groups = {w.params["shared_group"] for w in workers}
    assert len(groups) == 1, f"shared groups: {groups}"
    assert None not in groups, "a worker without --shared-group"
    for run in workers:
        # Any login may join a group (test_stack_acl.py shows the cost): keep it secret.
        written = services()[run.service]["command"]
        (group,) = [written[i + 1] for i, a in enumerate(written) if a == "--shared-group"]
        names = [v for v, _ in variables(group)]
        assert len(names) == 1, f"{run.service}: --shared-group {group}"
        assert env_example()[names[0]] == "", f"{run.service}: {names[0]} is not a secret"
    names = [w.params["worker"] for w in workers]
    assert None not in names, f"worker names: {names}"
    assert len(set(names)) == 2, f"worker names: {names}"
    spills = [str(w.params["spill"]) for w in workers]
    assert all("spill" in w.given for w in workers), "give each worker its --spill"
    assert len(set(spills)) == 2, f"spill files: {spills}"
    hosts = []
    for run in workers:
        _, port = parse_host_port(run.params["http"])
        published = ports(services()[run.service])
        assert [c for _, _, c in published] == [str(port)], f"{run.service}: publish --http {port}"
        hosts += [h for _, h, _ in published]
    assert len(set(hosts)) == len(hosts), f"platform host ports collide: {hosts}"


def test_coordination_policy_ledger_and_period() -> None:
    """From the command's options, else from the config's coordination block."""
    (run,) = by_command("coordinate")
    service = services()[run.service]
    config = settings_of(run.service)
    coordination = config.services.coordination
    if run.params["policy_path"] is not None:
        policy = repo_path(service, str(run.params["policy_path"]))
        assert policy is not None, f"{run.service}: the policy is not in a bind mount"
    else:
        policy = config.beside_config(coordination.policy)
    assert policy.is_file(), f"{run.service}: no policy {policy}"
    active = load_policy(policy)
    shadows = [load_policy(config.beside_config(p)) for p in coordination.shadows]
    names = [active.name, *(s.name for s in shadows)]
    assert len(set(names)) == len(names), f"{run.service}: policies need distinct names"
    if run.params["period"] is not None:
        parse_duration_s(run.params["period"])
    assert coordination.period_s > 0


@pytest.mark.parametrize("name", sorted(services()))
def test_every_published_port_is_bound_to_127_0_0_1(name: str) -> None:
    service = services()[name]
    assert service.get("network_mode") != "host", f"{name}: host networking bypasses ports"
    for host_ip, host_port, target in ports(service):
        assert host_ip == LOCALHOST, f"{name}: port {target} is published on {host_ip or 'all'}"
        assert host_port.isdigit(), f"{name}: port {target} has no fixed host port"


def test_every_variable_is_in_env_example_and_secrets_are_required() -> None:
    example = env_example()
    used: dict[str, set[str | None]] = {}
    for text in strings(compose()):
        for var, op in variables(text):
            used.setdefault(var, set()).add(op)
    missing = sorted(set(used) - set(example))
    assert not missing, f"docker-compose.yml uses variables not in .env.example: {missing}"
    unused = sorted(set(example) - set(used))
    assert not unused, f".env.example defines variables docker-compose.yml never uses: {unused}"
    for var, ops in used.items():
        if example[var] == "":  # a secret: compose must refuse to start without it
            assert ops == {":?"}, f"{var}: a secret must be written ${{{var}:?...}}, got {ops}"
        else:
            assert ops == {":-"}, f"{var}: give it a default, ${{{var}:-{example[var]}}}"
    for text in strings(compose()):
        for match in re.finditer(r"\$\{(\w+):-([^}]*)\}", text):
            assert match[2] == example[match[1]], f"{match[1]}: default differs from .env.example"


@pytest.mark.parametrize("name", sorted(services()))
def test_no_secret_is_written_in_the_compose_file(name: str) -> None:
    for key, value in environment(services()[name]).items():
        if re.search(r"PASSWORD|TOKEN|SECRET", key):
            refs = list(variables(value))
            assert len(refs) == 1, f"{name}: {key} is not from .env"
            assert value.startswith("${"), f"{name}: {key} is not from .env"


@pytest.mark.parametrize("name", sorted(services()))
def test_bind_mounts_exist_and_named_volumes_are_declared(name: str) -> None:
    declared = set(compose().get("volumes") or {})
    for mount in mounts(services()[name]):
        if mount.is_bind:
            source = REPO / mount.source
            assert source.exists(), f"{name}: bind mount source {mount.source} does not exist"
            if mount.source.startswith("./config"):
                assert mount.read_only, f"{name}: mount {mount.source} read-only"
        else:
            assert mount.source in declared, f"{name}: volume {mount.source} is not declared"


@pytest.mark.parametrize("name", sorted(services()))
def test_dependencies_exist_and_healthchecks_fit(name: str) -> None:
    service = services()[name]
    for target, condition in (service.get("depends_on") or {}).items():
        assert target in services(), f"{name}: depends on unknown service {target}"
        if condition.get("condition") == "service_healthy":
            assert "healthcheck" in services()[target], f"{name}: {target} has no healthcheck"
    test = (service.get("healthcheck") or {}).get("test")
    if name in carbonlink_services() and test:
        run = invocation(name, service)
        urls = [m for t in test for m in re.findall(r"http://([\d.]+):(\d+)/", t)]
        host, port = parse_host_port(run.params["http"] or "")
        assert urls, f"{name}: the healthcheck asks no URL"
        assert all(int(p) == port for _, p in urls), f"{name}: healthcheck port"
        assert all(h in (LOCALHOST, host) for h, _ in urls), f"{name}: healthcheck host"


def test_mosquitto_runs_the_repo_config_with_every_login() -> None:
    service = services()["mosquitto"]
    command = service["command"]
    script = repo_path(service, command[-1])
    assert script == MOSQUITTO_DIR / "start.sh", f"mosquitto: {command}"
    assert script.is_file()
    start = script.read_text()
    conf = mosquitto_conf()
    assert conf["allow_anonymous"] == "false"
    assert conf["max_queued_messages"] == "0"
    assert conf["persistence"] == "true"
    assert conf["use_username_as_clientid"] == "true"
    # broker-access writes the dynamic-security file where mosquitto.conf looks for it,
    # on a volume both mount, and the broker starts only once it has.
    access = services()["broker-access"]
    run = invocation("broker-access", access)
    assert run.command == "broker-access"
    written = Path(str(run.params["out"]))
    assert conf["plugin_opt_config_file"] == str(written)
    assert conf["plugin"].endswith("mosquitto_dynamic_security.so")
    volume = f"{next(v for v in access['volumes'] if str(written.parent) in v).split(':')[0]}"
    assert any(str(v).startswith(f"{volume}:{written.parent}") for v in service["volumes"])
    assert service["depends_on"]["broker-access"] == {"condition": "service_completed_successfully"}
    assert '"$auth/dynamic-security.json"' in start
    assert '-c "$here/mosquitto.conf"' in start
    users = mqtt_users()
    assert sorted(set(users)) == sorted(users), f"broker-access: {USERS_VARIABLE} repeats a name"
    assert set(PLANTS) | {METERS_USER.format(plant=p) for p in PLANTS} <= set(users)
    for user in users:
        grant(user)  # a name the stack does not know is refused before the file is written
    for user in service_users():
        assert not re.match(ID_PATTERN, user), f"{user}: a plant could take this username"
    env = environment(access)
    for user in users:
        var = password_variable(user)
        assert var in env, f"broker-access: no {var} for {user}"
        assert [v for v, _ in variables(env[var])] == [var], f"broker-access: {var}={env[var]}"


def test_influxdb_is_initialised_with_org_bucket_token_and_dbrp() -> None:
    service = services()["influxdb"]
    env = environment(service)
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key in ("USERNAME", "PASSWORD", "ORG", "BUCKET", "ADMIN_TOKEN"):
        assert env.get(f"DOCKER_INFLUXDB_INIT_{key}"), f"influxdb: DOCKER_INFLUXDB_INIT_{key}"
    initdb = repo_path(service, "/docker-entrypoint-initdb.d")
    assert initdb is not None
    scripts = sorted(initdb.glob("*.sh"))
    assert scripts, "influxdb: no init scripts"
    for script in scripts:
        # The image runs only executable *.sh files (run-parts).
        assert script.stat().st_mode & 0o111, f"influxdb: {script.name} is not executable"


def test_grafana_provisioning_fits_the_stack() -> None:
    service = services()["grafana"]
    provisioning = repo_path(service, "/etc/grafana/provisioning")
    assert provisioning == REPO / "config" / "grafana" / "provisioning"
    providers = yaml.safe_load((provisioning / "dashboards" / "carbonlink.yaml").read_text())
    dashboards_dir = providers["providers"][0]["options"]["path"]
    mounted = repo_path(service, dashboards_dir)
    assert mounted is not None, f"grafana: {dashboards_dir} is not mounted"
    assert sorted(mounted.glob("*.json")), (
        f"grafana: the provider loads {dashboards_dir}, which holds no mounted dashboard"
    )
    (source,) = yaml.safe_load((provisioning / "datasources" / "carbonlink.yaml").read_text())[
        "datasources"
    ]
    url = urlsplit(source["url"])
    assert (url.hostname, url.port) == ("influxdb", 8086), f"grafana datasource: {source['url']}"
    assert (
        source["jsonData"]["dbName"]
        == environment(services()["influxdb"])["DOCKER_INFLUXDB_INIT_BUCKET"]
    )
    env = container_env(service)
    for var, _ in variables(yaml.safe_dump(source)):
        assert env.get(var), f"grafana: the datasource reads ${var}, which is not set"


def test_dockerfile_copies_what_exists_and_dockerignore_keeps_secrets_out() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore, ".dockerignore: start from nothing, list what goes in"
    assert "**/.env" in ignore
    for args in COPIES:
        for source in args[:-1]:
            assert (REPO / source).exists(), f"Dockerfile: COPY {source}: no such file"
            top = source.split("/")[0]
            assert f"!{top}" in ignore or f"!{top}/" in ignore, f".dockerignore drops {source}"
    assert PurePosixPath("/app") == WORKDIR
    for name in CARBONLINK:
        env = container_env(services()[name])
        assert env[CONFIG_ENV_VAR] == IMAGE_ENV[CONFIG_ENV_VAR], f"{name}: {CONFIG_ENV_VAR}"
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()
    assert COMPOSE_FILE.is_file()


def test_stack_env_writes_every_secret_and_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    subprocess.run([REPO / "scripts" / "stack-env", target], check=True, capture_output=True)
    written = dict(
        line.split("=", 1)
        for line in target.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(written) == set(env_example())
    assert all(written.values()), "stack-env left a value empty"
    secrets = [written[k] for k, v in env_example().items() if v == ""]
    assert len(set(secrets)) == len(secrets), "stack-env repeated a secret"
    assert target.stat().st_mode & 0o077 == 0, "stack-env: .env must be private to its owner"
    # The coordination container signs reports with it: it must be an Ed25519 key.
    from carbonlink.coordination._signing import private_key_from_text

    assert private_key_from_text(written["LEDGER_KEY"])
    again = subprocess.run([REPO / "scripts" / "stack-env", target], capture_output=True)
    assert again.returncode != 0


def test_the_code_reads_no_variable_this_test_does_not_know() -> None:
    """Every os.environ read in the package; a new one must be provided above, then listed."""
    # CA_FILE_ENV: the stack runs without TLS (docs/operations.md), so no container sets it.
    known = {"CONFIG_ENV_VAR", "INFLUXDB_PASSWORD_ENV", "INFLUXDB_TOKEN_ENV", "CA_FILE_ENV", "var"}
    found = set()
    for path in (REPO / "src" / "carbonlink").rglob("*.py"):
        for match in re.finditer(
            r"os\.(?:environ\.get|getenv)\((\w+)|os\.environ\[(\w+)", path.read_text()
        ):
            found.add((path.relative_to(REPO).as_posix(), match[1] or match[2]))
    unknown = sorted(f"{path}: {name}" for path, name in found if name not in known)
    assert not unknown, f"environment reads the compose test does not check: {unknown}"
    # The InfluxDB 1.x password is read only for influxdb:// stores, which the stack does not use.
    assert INFLUXDB_PASSWORD_ENV not in {k for s in services().values() for k in environment(s)}


def test_api_token_and_ledger_key_reach_who_uses_them() -> None:
    """The workers' API has its token (state changes are off without one); the
    coordinator signs its reports with the ledger key."""
    for run in invocations():
        settings = settings_of(run.service)
        env = container_env(services()[run.service])
        if run.command == "platform":
            assert env.get(settings.services.api.token_env), f"{run.service}: no API token"
        if run.command == "coordinate":
            key_env = settings.services.coordination.signing_key_env
            assert env.get(key_env), f"{run.service}: reports would go unsigned"


def test_no_two_containers_share_a_login() -> None:
    """The broker names each session after its username: two connections under one name
    would throw each other off in turn."""
    logins: dict[str, str] = {}
    for name in CARBONLINK:
        settings = settings_of(name)
        user = container_env(services()[name])[settings.services.broker.username_env or ""]
        assert user not in logins, f"{name} and {logins.get(user)} both log in as {user}"
        logins[user] = name


def test_each_plants_meters_may_write_only_that_plants_readings() -> None:
    for plant in PLANTS:
        root = f"carbonlink/v1/{plant}"
        meters = grant(METERS_USER.format(plant=plant))
        assert meters.publish == (f"{root}/meters/+", f"{root}/sim-status", f"{root}/deadletter")
        assert meters.subscribe == meters.receive == (f"{root}/directives",)

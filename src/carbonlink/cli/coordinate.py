"""``carbonlink coordinate``: run a coordination policy against the plants, check the
ledger of reports it keeps (``--verify-ledger``), or make the key pair that signs it
(``--keygen``).

The model is a differential-game model in the spirit of Qin et al. (2026), our own
formulation (docs/coordination.md).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Final

import aiomqtt
import click

from carbonlink import wire
from carbonlink.cli._common import (
    DURATION,
    broker_option,
    command_line,
    config_option,
    http_option,
    parse_host_port,
    run_async,
    serving_metrics,
    settings_from,
    shown_path,
    store_option,
    store_url,
    user_errors,
)
from carbonlink.cli._story import period_line
from carbonlink.config import (
    CoordinationConfig,
    Settings,
    resolve_config_path,
    secret_from_env,
)
from carbonlink.coordination import (
    STATUS_STATE_KEY,
    Anchor,
    Coordinator,
    Ed25519PublicKey,
    Journal,
    generate_key_pair,
    key_id,
    load_policy,
    parse_anchor,
    private_key_from_text,
    public_pem,
    read_public_key,
    settings_public_key,
    settings_signing_key,
    verify_journal,
)
from carbonlink.errors import ConfigError
from carbonlink.mqtt.client import BrokerAddress, make_client, parse_broker_url
from carbonlink.platform import Store, open_store

__all__ = ["coordinate"]

log = logging.getLogger(__name__)

EXIT_BROKEN_LEDGER: Final = 1
ANCHOR_WAIT_S: Final = 5.0
PERIOD_POLL_S: Final = 1.0  # how often the period lines look at the journal
# Where config/carbonlink.yaml keeps the journal, for a --keygen run without a config.
DEFAULT_JOURNAL: Final = Path("var/coordination-ledger.sqlite")


def _anchor_from_broker(address: BrokerAddress) -> bytes:
    """The retained ledger anchor the coordinator publishes, as received."""

    async def fetch() -> bytes:
        async with make_client(address, "carbonlink-verify-ledger") as client:
            await client.subscribe(wire.LEDGER_ANCHOR_TOPIC, qos=1)
            async with asyncio.timeout(ANCHOR_WAIT_S):
                async for message in client.messages:
                    payload = message.payload
                    if isinstance(payload, bytes):
                        return payload
        raise ConfigError(None, "--anchor", "the broker closed before sending the anchor")

    try:
        return asyncio.run(fetch())
    except TimeoutError:
        raise ConfigError(
            None,
            "--anchor",
            f"no retained anchor on {wire.LEDGER_ANCHOR_TOPIC} within {ANCHOR_WAIT_S}s "
            '(may this login read it? docs/architecture.md, "Access control")',
        ) from None
    except aiomqtt.MqttError as exc:
        raise ConfigError(None, "--anchor", f"broker: {exc}") from exc


def _parse_anchor(text: str) -> Anchor:
    index, _, digest = text.partition(":")
    if not index.isdigit() or len(digest) != 64:
        raise ConfigError(None, "--anchor", "expected NEXT_INDEX:SHA256_HEX or `broker`")
    return Anchor(int(index), digest)


def _settings_if_any(config_path: Path | None) -> Settings | None:
    """The deployment's config when there is one: verifying must not need it."""
    if config_path is not None or resolve_config_path(None).is_file():
        return settings_from(config_path)
    return None


def _verifying_key(settings: Settings | None, public_key: Path | None) -> Ed25519PublicKey | None:
    """The key to check signatures with: --public-key, else the config's, else the
    public half of a signing key this process holds."""
    if public_key is not None:
        return read_public_key(public_key)
    if settings is not None:
        return settings_public_key(settings)
    variable = CoordinationConfig().signing_key_env
    text = secret_from_env(variable)
    if not text:
        return None
    try:
        return private_key_from_text(text).public_key()
    except ValueError as exc:
        raise ConfigError(None, f"${variable}", str(exc)) from None


def verify_ledger(
    path: Path,
    store: str | None,
    anchor: Anchor | None,
    key: Ed25519PublicKey | None = None,
    *,
    anchor_from_broker: bool = False,
) -> None:
    """Print what holds and what does not; exit 1 when anything does not hold."""
    if not path.is_file():
        raise click.BadParameter(f"no ledger file {path}", param_hint="--verify-ledger")
    opened = None if store is None else open_store(store, read_only=True)
    try:
        with Journal.open_readonly(path) as journal:
            verification = verify_journal(
                journal,
                key=key,
                anchor=anchor,
                anchor_must_be_signed=anchor_from_broker,
                store=opened,
            )
    except sqlite3.DatabaseError as exc:
        click.echo(f"BROKEN: {path} is not a coordination journal ({exc})")
        sys.exit(EXIT_BROKEN_LEDGER)
    finally:
        if opened is not None:
            opened.close()
    for line in verification.lines():
        click.echo(line)
    if not verification.ok:
        sys.exit(EXIT_BROKEN_LEDGER)


def keygen(path: Path, settings: Settings | None, config_path: Path | None) -> None:
    """Write a key pair and print what to run next, with this deployment's paths."""
    try:
        private, public = generate_key_pair(path)
    except FileExistsError as exc:
        raise ConfigError(None, "--keygen", str(exc)) from None
    config = settings.services.coordination if settings is not None else CoordinationConfig()
    variable = config.signing_key_env
    with_config = ["--config", shown_path(config_path)] if config_path is not None else []
    journal = (
        settings.journal_path() if settings is not None else Path("var/coordination-ledger.sqlite")
    )
    verify = ["coordinate", *with_config, "--verify-ledger", shown_path(journal),
              "--public-key", shown_path(public)]  # fmt: skip
    if settings is not None:
        verify += ["--store", store_url(settings, None)]
    key = read_public_key(public)
    click.echo(
        f"Wrote the ledger's signing key to {shown_path(private)}: private, keep it secret "
        f"and never commit it.\nIts public key (key {key_id(key)}) is in {shown_path(public)}: "
        "give it to whoever checks the ledger.\n\n"
        f"Sign reports: put the private key in ${variable} where the coordinator runs, "
        "then start it:\n"
        f'  export {variable}="$(cat {shown_path(private)})"\n'
        f"  {command_line('coordinate', *with_config)}\n"
        "or name the file in the config (coordination.signing_key_file).\n"
        f"Check that the key loads (prints the public key):\n"
        f"  {command_line('coordinate', *with_config, '--show-public-key')}\n"
        "Check a ledger with the public key only:\n"
        f"  {command_line(*verify)}"
    )


def show_public_key_of(settings: Settings) -> None:
    signing = settings_signing_key(settings)
    if signing is None:
        config = settings.services.coordination
        raise ConfigError(
            settings.path,
            "coordination.signing_key_env",
            f"${config.signing_key_env} is unset and no signing_key_file is named: "
            f"no key to show (make one with `{command_line('coordinate', '--keygen', 'PATH')}`)",
        )
    click.echo(public_pem(signing.public_key()), nl=False)
    click.echo(f"key {key_id(signing)}", err=True)


@click.command()
@config_option
@broker_option
@store_option
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Policy file (YAML) [default: coordination.policy in the config].",
)
@click.option(
    "--shadow",
    "shadow_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A policy to evaluate live beside the active one; repeat for more "
    "[default: coordination.shadows in the config].",
)
@click.option(
    "--ledger",
    "ledger_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Ledger and journal file [default: coordination.journal in the config].",
)
@click.option(
    "--period", type=DURATION, default=None, help="Reporting period (90s, 15m) [default: config]."
)
@click.option("--quiet", is_flag=True, help="No line per period on stdout.")
@http_option
@click.option(
    "--verify-ledger",
    "verify_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Only check this ledger: hash chain, signatures (--public-key), --anchor, and "
    "with --store every report re-derived from storage. Prints OK or what is wrong; exit "
    "1 if anything is.",
)
@click.option(
    "--anchor",
    default=None,
    help="With --verify-ledger: NEXT_INDEX:HASH from the published anchor, or `broker` "
    "to read the retained anchor (catches removed reports).",
)
@click.option(
    "--public-key",
    "public_key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --verify-ledger: check every report's signature (and the broker's anchor) "
    "with this Ed25519 public key [default: coordination.public_key in the config, else "
    "the public half of the signing key, where it is set].",
)
@click.option(
    "--keygen",
    "keygen_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Only write a new signing key pair: the private key to this file, the public "
    "key to FILE.pub; prints what to run next.",
)
@click.option(
    "--show-public-key",
    is_flag=True,
    help="Only print the public key (PEM) of the signing key the config names.",
)
@user_errors
def coordinate(
    config_path: Path | None,
    broker: str | None,
    store_override: str | None,
    policy_path: Path | None,
    shadow_paths: tuple[Path, ...],
    ledger_path: Path | None,
    period: float | None,
    quiet: bool,
    http: str | None,
    verify_path: Path | None,
    anchor: str | None,
    public_key: Path | None,
    keygen_path: Path | None,
    show_public_key: bool,
) -> None:
    """Publish each plant's efforts for the policy's stage and report every period."""
    if keygen_path is not None:
        keygen(keygen_path, _settings_if_any(config_path), config_path)
        return
    if show_public_key:
        show_public_key_of(settings_from(config_path))
        return
    if verify_path is not None:
        anchored = None
        if anchor == "broker":
            broker_config = settings_from(config_path).services.broker
            payload = _anchor_from_broker(
                parse_broker_url(broker or broker_config.url, broker_config)
            )
            try:
                anchored = parse_anchor(payload)
            except ValueError as exc:
                click.echo(f"BROKEN: the anchor on {wire.LEDGER_ANCHOR_TOPIC} is not valid: {exc}")
                sys.exit(EXIT_BROKEN_LEDGER)
        elif anchor is not None:
            anchored = _parse_anchor(anchor)
        # Storage is checked only when named: verifying must not need a store to run, nor
        # the deployment's config.
        key = _verifying_key(_settings_if_any(config_path), public_key)
        verify_ledger(
            verify_path, store_override, anchored, key, anchor_from_broker=anchor == "broker"
        )
        return
    for given, name in ((anchor, "--anchor"), (public_key, "--public-key")):
        if given is not None:
            raise ConfigError(None, name, "only with --verify-ledger")
    settings = settings_from(config_path)
    config = settings.services.coordination
    period_s = period or config.period_s
    policy = load_policy(policy_path or settings.beside_config(config.policy))
    shadow_files = shadow_paths or tuple(settings.beside_config(p) for p in config.shadows)
    shadows = [load_policy(p) for p in shadow_files]
    address = parse_broker_url(broker or settings.services.broker.url, settings.services.broker)
    listen = parse_host_port(http) if http else None
    store = open_store(store_url(settings, store_override))
    signing_key = settings_signing_key(settings)
    if signing_key is None:
        log.warning(
            "coordinate: reports are unsigned: $%s is unset (make a key with `%s`)",
            config.signing_key_env,
            command_line("coordinate", "--keygen", "PATH"),
        )
    else:
        log.info("coordinate: signing reports with key %s", key_id(signing_key))
    journal = Journal(ledger_path or settings.journal_path(), signing_key=signing_key)
    service = Coordinator(
        settings,
        store,
        address,
        policy,
        journal,
        shadows=shadows,
        period_s=period_s,
        read_lag_s=config.read_lag_s,
    )
    try:
        public = None if signing_key is None else signing_key.public_key()
        with serving_metrics(
            service.metrics, config.metrics_host, config.metrics_port,
            "coordination.metrics_port",
        ):  # fmt: skip
            run_async(_run(service, store, journal, listen, public, quiet=quiet))
    finally:
        journal.close()
        store.close()


async def _run(
    service: Coordinator,
    store: Store,
    journal: Journal,
    listen: tuple[str, int] | None,
    public_key: Ed25519PublicKey | None,
    *,
    quiet: bool,
) -> None:
    async with asyncio.TaskGroup() as tasks:
        running = tasks.create_task(service.run())
        if not quiet:
            click.echo(
                f"coordinate: policy {service.policy.name}, a line per period "
                f"(--quiet for none); journal {shown_path(journal.path)}"
            )
            tasks.create_task(_period_lines(journal, running))
        if listen is not None:
            from carbonlink.web.api import coordination_app, serve

            app = coordination_app(journal.path, store, public_key=public_key)
            tasks.create_task(serve(app, *listen))
            click.echo(
                f"serving http://{listen[0]}:{listen[1]}/api/v1/coordination/status", err=True
            )


async def _period_lines(journal: Journal, running: asyncio.Task[None]) -> None:
    """One line on stdout per period the coordinator records, as it records it: what
    the status in the journal says (the same the API and dashboard show)."""
    shown = None
    while not running.done():
        status = journal.load_state(STATUS_STATE_KEY)
        if status is not None and status.get("updated_ms") != shown:
            shown = status.get("updated_ms")
            click.echo(period_line(status, len(journal.ledger)))
        await asyncio.sleep(PERIOD_POLL_S)

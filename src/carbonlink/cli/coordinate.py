"""``carbonlink coordinate``: run a coordination policy against the plants, or check
the ledger of reports it keeps (``--verify-ledger``).

The model is a differential-game model in the spirit of Qin et al. (2026), our own
formulation (docs/coordination.md).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Final

import aiomqtt
import click

from carbonlink._exceptions import ConfigError
from carbonlink._mqtt import BrokerAddress, make_client, parse_broker_url
from carbonlink.cli._common import (
    broker_option,
    config_option,
    http_option,
    parse_duration_s,
    parse_host_port,
    run_async,
    settings_from,
    store_option,
    store_url,
    user_errors,
)
from carbonlink.config import CoordinationConfig, resolve_config_path, secret_from_env
from carbonlink.coordination import (
    LEDGER_ANCHOR_TOPIC,
    Coordinator,
    Journal,
    decode_anchor,
    load_policy,
    verify_against_store,
)
from carbonlink.platform import Store, open_store

__all__ = ["coordinate"]

EXIT_BROKEN_LEDGER: Final = 1
ANCHOR_WAIT_S: Final = 5.0


def _anchor_from_broker(address: BrokerAddress) -> tuple[int, str]:
    """The retained ledger anchor the coordinator publishes."""

    async def fetch() -> tuple[int, str]:
        async with make_client(address, "carbonlink-verify-ledger") as client:
            await client.subscribe(LEDGER_ANCHOR_TOPIC, qos=1)
            async with asyncio.timeout(ANCHOR_WAIT_S):
                async for message in client.messages:
                    payload = message.payload
                    if isinstance(payload, bytes):
                        return decode_anchor(payload)
        raise ConfigError(None, "--anchor", "the broker closed before sending the anchor")

    try:
        return asyncio.run(fetch())
    except TimeoutError:
        raise ConfigError(
            None, "--anchor", f"no retained anchor on {LEDGER_ANCHOR_TOPIC} within {ANCHOR_WAIT_S}s"
        ) from None
    except aiomqtt.MqttError as exc:
        raise ConfigError(None, "--anchor", f"broker: {exc}") from exc


def _parse_anchor(text: str) -> tuple[int, str]:
    index, _, digest = text.partition(":")
    if not index.isdigit() or len(digest) != 64:
        raise ConfigError(None, "--anchor", "expected NEXT_INDEX:SHA256_HEX or `broker`")
    return int(index), digest


def verify_ledger(
    path: Path,
    store: str | None,
    anchor: tuple[int, str] | None,
    key: bytes | None = None,
    key_env: str = "",
) -> None:
    """Print OK or the first broken report; exit 1 when anything does not hold."""
    if not path.is_file():
        raise click.BadParameter(f"no ledger file {path}", param_hint="--verify-ledger")
    with Journal.open_readonly(path) as journal:
        check = journal.ledger.verify(anchor, key=key)
        broken = not check.ok
        if check.ok:
            anchored = " and matches the anchor" if anchor is not None else ""
            signed = (
                ", every report signed"
                if key is not None
                else f" (signatures not checked: ${key_env} is unset)"
            )
            click.echo(f"OK: {check.reports} reports, chain intact{anchored}{signed}")
        else:
            click.echo(f"BROKEN at report {check.broken_at}: {check.reason}")
        if store is not None and check.ok:
            opened = open_store(store, read_only=True)
            try:
                mismatches = verify_against_store(journal.ledger, opened)
            finally:
                opened.close()
            late = [m for m in mismatches if m.late]
            wrong = [m for m in mismatches if not m.late]
            for m in wrong:
                click.echo(f"MISMATCH at report {m.index} ({m.plant}): {m.reason}")
            for m in late:
                click.echo(f"late data at report {m.index} ({m.plant}): {m.reason}")
            if not wrong:
                click.echo(f"OK: every report re-derives from {store} ({len(late)} with late data)")
            broken = broken or bool(wrong)
    if broken:
        sys.exit(EXIT_BROKEN_LEDGER)


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
@click.option("--period", default=None, help="Reporting period (90s, 15m) [default: config].")
@http_option
@click.option(
    "--verify-ledger",
    "verify_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Only check this ledger: hash chain, --anchor, and with --store every report "
    "against storage. Prints OK or what is wrong; exit 1 if anything is.",
)
@click.option(
    "--anchor",
    default=None,
    help="With --verify-ledger: NEXT_INDEX:HASH from the published anchor, or `broker` "
    "to read the retained anchor (catches removed reports).",
)
@user_errors
def coordinate(
    config_path: Path | None,
    broker: str | None,
    store_override: str | None,
    policy_path: Path | None,
    shadow_paths: tuple[Path, ...],
    ledger_path: Path | None,
    period: str | None,
    http: str | None,
    verify_path: Path | None,
    anchor: str | None,
) -> None:
    """Publish each plant's efforts for the policy's stage and report every period."""
    if verify_path is not None:
        anchored = None
        if anchor == "broker":
            broker_config = settings_from(config_path).services.broker
            anchored = _anchor_from_broker(
                parse_broker_url(broker or broker_config.url, broker_config)
            )
        elif anchor is not None:
            anchored = _parse_anchor(anchor)
        # Storage is checked only when named: verifying must not need a store to run, nor
        # the deployment's config (the key's variable then has its default name).
        key_env = CoordinationConfig().signing_key_env
        if config_path is not None or resolve_config_path(None).is_file():
            key_env = settings_from(config_path).services.coordination.signing_key_env
        key = secret_from_env(key_env)
        verify_ledger(verify_path, store_override, anchored, key.encode() if key else None, key_env)
        return
    if anchor is not None:
        raise ConfigError(None, "--anchor", "only with --verify-ledger")
    settings = settings_from(config_path)
    config = settings.services.coordination
    period_s = parse_duration_s(period) if period else config.period_s
    policy = load_policy(policy_path or settings.beside_config(config.policy))
    shadow_files = shadow_paths or tuple(settings.beside_config(p) for p in config.shadows)
    shadows = [load_policy(p) for p in shadow_files]
    address = parse_broker_url(broker or settings.services.broker.url, settings.services.broker)
    listen = parse_host_port(http) if http else None
    store = open_store(store_url(settings, store_override))
    journal = Journal(ledger_path or settings.journal_path(), signing_key=settings.ledger_key())
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
        run_async(_run(service, store, journal.path, listen))
    finally:
        journal.close()
        store.close()


async def _run(
    service: Coordinator, store: Store, journal: Path, listen: tuple[str, int] | None
) -> None:
    if listen is None:
        await service.run()
        return
    from carbonlink.platform.api import serve
    from carbonlink.platform.api._coordination import coordination_app

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(service.run())
        tasks.create_task(serve(coordination_app(journal, store), *listen))
        click.echo(f"serving http://{listen[0]}:{listen[1]}/api/v1/coordination/status", err=True)

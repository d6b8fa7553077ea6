"""The report ledger: a clean chain verifies, edits and deletions are found, and the
Ed25519 signatures hold against the public key alone. Tampered and malformed ledgers
through the CLI as a subprocess: test_ledger_corpus.py."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from carbonlink.cli.coordinate import coordinate
from carbonlink.coordination import Ledger, Party, Report, generate_key_pair, key_id
from carbonlink.coordination._signing import (
    anchor_signature_ok,
    private_key_from_text,
    public_key_from_text,
    report_signature_ok,
    sign_report,
)
from tests.coordination.ledger_corpus import rewrite

HOUR = 3_600_000


def report(index: int, transfers: dict[Party, float] | None = None) -> Report:
    return Report(
        period_start_ms=index * HOUR,
        period_end_ms=(index + 1) * HOUR,
        plant="cement-01",
        policy="stage3",
        stage=3,
        stage_name="advanced symbiosis",
        reported_tco2e=180.0 + index,
        effort_firm=4.58,
        effort_platform=2.93,
        sigma=1.25,
        subsidy_rate_firm=0.0,
        subsidy_rate_platform=0.0,
        carbon_price=60.0,
        projected_abatement=float(index),
        transfers=transfers or {"M": 1.5 * index, "P": -0.5 * index, "G": -1.0 * index},
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    with Ledger(tmp_path / "ledger.sqlite") as book:
        for index in range(5):
            book.append(report(index))
    return Ledger(tmp_path / "ledger.sqlite")


def test_clean_chain_verifies(ledger: Ledger) -> None:
    check = ledger.verify()
    assert check.ok
    assert check.reports == 5
    assert [b["reported_tco2e"] for b in ledger.bodies()] == [180, 181, 182, 183, 184]


def test_edited_body_is_found_at_its_index(ledger: Ledger) -> None:
    db = sqlite3.connect(ledger.path)
    (body,) = db.execute("SELECT body FROM reports WHERE idx = 2").fetchone()
    edited = json.loads(body) | {"reported_tco2e": 100.0}
    with db:
        db.execute("UPDATE reports SET body = ? WHERE idx = 2", (json.dumps(edited),))
    check = ledger.verify()
    assert check.broken_at == 2
    assert "edited" in check.reason


def test_deleted_report_is_found(ledger: Ledger) -> None:
    db = sqlite3.connect(ledger.path)
    with db:
        db.execute("DELETE FROM reports WHERE idx = 3")
    check = ledger.verify()
    assert check.broken_at == 3
    assert "missing" in check.reason


def test_renumbered_chain_breaks_the_link(ledger: Ledger) -> None:
    db = sqlite3.connect(ledger.path)
    with db:
        db.execute("DELETE FROM reports WHERE idx = 1")
        db.execute("UPDATE reports SET idx = idx - 1 WHERE idx > 1")
    check = ledger.verify()
    assert check.broken_at == 1
    assert "prev_hash" in check.reason


def test_unbalanced_transfers_are_refused(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite") as book, pytest.raises(ValueError, match="zero"):
        book.append(report(1, {"M": 1.0, "P": 0.0, "G": 0.0}))


def test_cli_verify_prints_ok_or_the_broken_report(ledger: Ledger) -> None:
    runner = CliRunner()
    clean = runner.invoke(coordinate, ["--verify-ledger", str(ledger.path)])
    assert clean.exit_code == 0
    assert clean.output.startswith("OK: 5 reports")
    db = sqlite3.connect(ledger.path)
    with db:
        db.execute("UPDATE reports SET body = replace(body, '184', '1') WHERE idx = 4")
    broken = runner.invoke(coordinate, ["--verify-ledger", str(ledger.path)])
    assert broken.exit_code == 1
    assert "BROKEN at report 4" in broken.output


KEY = Ed25519PrivateKey.generate()  # the coordinator's
PUBLIC = KEY.public_key()  # what a verifier holds


def _rewrite_consistently(path: Path, index: int, change: dict[str, float]) -> None:
    """Edit one report and re-hash it and everything after it: a careful forger."""
    rewrite(path, index, lambda body: body.update(change))


def test_signatures_catch_a_consistently_rewritten_chain(tmp_path: Path) -> None:
    path = tmp_path / "signed.sqlite"
    with Ledger(path, signing_key=KEY) as book:
        for index in range(5):
            book.append(report(index))
        check = book.verify(key=PUBLIC)
        assert check.signed
        assert check.key_id == key_id(PUBLIC)
    _rewrite_consistently(path, 2, {"reported_tco2e": 1.0})
    with Ledger(path) as book:
        assert book.verify().ok  # without the key, a consistent rewrite looks fine...
        check = book.verify(key=PUBLIC)
    assert check.broken_at == 2  # ...with the public key, the forged report is found
    assert "signature does not verify" in check.reason


def test_a_verifier_cannot_sign() -> None:
    """What the public key can do: check. Signing needs the private key, which the
    verifier never sees (the reason for Ed25519 over the HMAC key used before)."""
    assert not hasattr(PUBLIC, "sign")
    signature = sign_report(KEY, "0" * 64)
    assert report_signature_ok(PUBLIC, "0" * 64, signature)
    assert not report_signature_ok(PUBLIC, "1" + "0" * 63, signature)
    # A report's signature is not an anchor's: the messages are kept apart.
    assert not anchor_signature_ok(PUBLIC, 0, "0" * 64, signature)


def test_unsigned_reports_and_wrong_keys_fail_a_keyed_check(tmp_path: Path) -> None:
    unsigned = tmp_path / "unsigned.sqlite"
    with Ledger(unsigned) as book:
        book.append(report(0))
        assert book.verify(key=PUBLIC).reason == "report is unsigned"
    signed = tmp_path / "signed.sqlite"
    with Ledger(signed, signing_key=KEY) as book:
        book.append(report(0))
        other = Ed25519PrivateKey.generate().public_key()
        check = book.verify(key=other)
    assert not check.ok
    assert f"it names key {key_id(PUBLIC)}, the given key is {key_id(other)}" in check.reason


def test_keys_load_from_pem_and_hex_and_say_what_is_wrong(tmp_path: Path) -> None:
    private, public = generate_key_pair(tmp_path / "ledger-key")
    assert private.stat().st_mode & 0o777 == 0o600
    pem_key = private_key_from_text(private.read_text())
    raw = pem_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    assert key_id(private_key_from_text(raw.hex())) == key_id(pem_key)
    assert key_id(public_key_from_text(public.read_text())) == key_id(pem_key)
    with pytest.raises(FileExistsError):
        generate_key_pair(tmp_path / "ledger-key")
    for text, problem in [
        ("the coordinator's key", "expected a PEM private key"),
        ("ab" * 16, "expected a PEM private key"),  # 128 bits: not an Ed25519 key
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "not a readable"),
    ]:
        with pytest.raises(ValueError, match=problem):
            private_key_from_text(text)
    with pytest.raises(ValueError, match="this is a private key"):
        public_key_from_text(private.read_text())


def test_cli_checks_signatures_with_the_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator's own host holds the private key: its public half checks."""
    from tests.configs import REPO_CONFIG

    path = tmp_path / "signed.sqlite"
    with Ledger(path, signing_key=KEY) as book:
        for index in range(3):
            book.append(report(index))
    config = ["--config", str(REPO_CONFIG / "carbonlink.yaml")]
    monkeypatch.delenv("CARBONLINK_LEDGER_KEY", raising=False)
    unchecked = CliRunner().invoke(coordinate, [*config, "--verify-ledger", str(path)])
    assert unchecked.exit_code == 0
    assert "signatures not checked" in unchecked.output
    raw = KEY.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    monkeypatch.setenv("CARBONLINK_LEDGER_KEY", raw.hex())
    checked = CliRunner().invoke(coordinate, [*config, "--verify-ledger", str(path)])
    assert checked.exit_code == 0
    assert f"every report signed (key {key_id(KEY)})" in checked.output
    _rewrite_consistently(path, 1, {"reported_tco2e": 0.5})
    forged = CliRunner().invoke(coordinate, [*config, "--verify-ledger", str(path)])
    assert forged.exit_code == 1
    assert "BROKEN at report 1" in forged.output
    monkeypatch.setenv("CARBONLINK_LEDGER_KEY", "an old HMAC secret")
    refused = CliRunner().invoke(coordinate, [*config, "--verify-ledger", str(path)])
    assert refused.exit_code == 2
    assert "$CARBONLINK_LEDGER_KEY: not an Ed25519 private key" in refused.output


def test_a_ledger_from_before_signatures_still_verifies(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)  # the layout before the signature column
    db.execute("CREATE TABLE reports (idx INTEGER PRIMARY KEY, body TEXT NOT NULL, "
               "prev_hash TEXT NOT NULL, hash TEXT NOT NULL)")  # fmt: skip
    db.commit()
    db.close()
    from carbonlink.coordination import Journal

    with Journal.open_readonly(path) as journal:
        assert journal.ledger.verify().ok
        assert journal.ledger.verify(key=PUBLIC).ok  # nothing to check: no reports
    with Ledger(path, signing_key=KEY) as book:  # a writer adds the columns
        book.append(report(0))
        assert book.verify(key=PUBLIC).signed


def test_an_anchor_from_the_broker_must_carry_the_coordinators_signature(
    tmp_path: Path,
) -> None:
    """Anyone who could write the retained anchor could pass off a shortened chain's
    head as the real one; the coordinator's signature on it rules that out."""
    from carbonlink.coordination import Anchor, Journal, verify_journal
    from carbonlink.coordination._signing import sign_anchor

    with Journal(tmp_path / "journal.sqlite", signing_key=KEY) as journal:
        journal.ledger.append(report(0))
        journal.ledger.append(report(1))
        head = journal.ledger.head()
        signed = Anchor(*head, key_id(KEY), sign_anchor(KEY, *head))
        verdicts = {
            name: verify_journal(journal, key=PUBLIC, anchor=anchor, anchor_must_be_signed=True)
            for name, anchor in {
                "signed": signed,
                "unsigned": Anchor(*head),
                "forged": Anchor(*head, key_id(KEY), sign_anchor(KEY, head[0] + 1, head[1])),
            }.items()
        }
    assert verdicts["signed"].ok
    assert verdicts["signed"].summary().startswith("OK: 2 reports, chain intact and matches")
    assert not verdicts["unsigned"].ok
    assert "the anchor is unsigned" in verdicts["unsigned"].summary()
    assert not verdicts["forged"].ok
    assert "the anchor's signature does not verify" in verdicts["forged"].summary()

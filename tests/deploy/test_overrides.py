"""Policy overrides: bound to one head SHA and one exact set of deny violations, audited."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bot.deploy.overrides import (
    OverrideStore,
    apply_override,
    deny_violations,
    pr_key,
    violations_fingerprint,
)
from bot.forge.base import RepoRef
from bot.models import AppReport, CommitCheck, PolicyResult, Report, SignatureReport, Violation
from bot.server.storage import StorageError, open_database
from bot.server.storage.queue import JobQueue, NewJob

HEAD = "a" * 40
NEW_HEAD = "b" * 40
BASE = "c" * 40
AT = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
KEY = "github:acme/deploy#12"

LATEST = Violation(
    "deny", "deny_latest_tag", "web uses image tag latest", "Deployment", "web", "web"
)
ROOT = Violation("deny", "deny_root", "container runs as root", "Deployment", "web", "web")
LIMITS = Violation("warn", "warn_no_limits", "no memory limit", "Deployment", "api", "api")


def app(name: str, *violations: Violation, status: str = "changed") -> AppReport:
    denied = any(v.severity == "deny" for v in violations)
    verdict = "fail" if denied else ("warn" if violations else "pass")
    return AppReport(
        name=name,
        path=f"apps/{name}",
        renderer="plain",
        status=status,
        policy=PolicyResult(verdict=verdict, violations=list(violations)),
    )


def report(*apps: AppReport, head: str = HEAD, signatures: str = "pass") -> Report:
    sig = SignatureReport(
        verdict=signatures,
        mode="all",
        commits=[CommitCheck(head, "valid" if signatures == "pass" else "unsigned", "gpg")],
    )
    apps_list = list(apps)
    verdicts = [a.policy.verdict for a in apps_list] + (["fail"] if signatures == "fail" else [])
    order = ["pass", "warn", "fail", "error"]
    return Report(
        base=BASE,
        head=head,
        verdict=max(verdicts, key=order.index, default="pass"),
        apps=apps_list,
        signatures=sig,
    )


@pytest.fixture
def store(database):
    return OverrideStore(database)  # each storage backend in turn (tests/pgkit.py)


# --- fingerprint ---------------------------------------------------------------------------


def test_fingerprint_ignores_order_duplicates_and_warnings():
    one = report(app("web", LATEST, ROOT), app("api", LIMITS))
    other = report(app("api"), app("web", ROOT, LATEST, ROOT))
    assert violations_fingerprint(one) == violations_fingerprint(other)


@pytest.mark.parametrize(
    "changed",
    [
        replace(LATEST, msg="web uses image tag latest (sidecar)"),
        replace(LATEST, rule="deny_untagged"),
        replace(LATEST, kind="StatefulSet"),
        replace(LATEST, namespace="web-canary"),
        replace(LATEST, name="web-2"),
        replace(LATEST, namespace=""),  # "" and None must not collide
    ],
)
def test_fingerprint_changes_with_any_field(changed):
    assert violations_fingerprint(report(app("web", LATEST))) != violations_fingerprint(
        report(app("web", changed))
    )


def test_fingerprint_depends_on_the_app():
    assert violations_fingerprint(report(app("web", LATEST))) != violations_fingerprint(
        report(app("web-canary", LATEST))
    )


def test_added_violation_changes_fingerprint():
    assert violations_fingerprint(report(app("web", LATEST))) != violations_fingerprint(
        report(app("web", LATEST, ROOT))
    )


def test_deny_violations_lists_only_denials():
    found = deny_violations(report(app("web", LATEST), app("api", LIMITS)))
    assert found == [("web", LATEST)]


def test_pr_key():
    repo = RepoRef("gitlab", "acme/platform/deploy", "https://gitlab.example/acme.git", 7)
    assert pr_key(repo, 12) == "gitlab:acme/platform/deploy#12"


# --- store binding ------------------------------------------------------------------------


def test_same_violations_on_same_head_hold(store):
    current = report(app("web", LATEST))
    fp = violations_fingerprint(current)
    recorded = store.record(KEY, HEAD, fp, "sec-lead", "false positive: pinned by digest", AT)
    # The next preview of the same head computes the same denials again.
    again = report(app("web", LATEST))
    assert store.active(KEY, again.head, violations_fingerprint(again)) == recorded


def test_new_push_voids_the_override(store):
    fp = violations_fingerprint(report(app("web", LATEST)))
    store.record(KEY, HEAD, fp, "sec-lead", "ok", AT)
    pushed = report(app("web", LATEST), head=NEW_HEAD)
    assert store.active(KEY, pushed.head, violations_fingerprint(pushed)) is None


def test_new_violation_voids_the_override(store):
    store.record(KEY, HEAD, violations_fingerprint(report(app("web", LATEST))), "sec", "ok", AT)
    worse = report(app("web", LATEST, ROOT))
    assert store.active(KEY, HEAD, violations_fingerprint(worse)) is None


def test_changed_violation_message_voids_the_override(store):
    store.record(KEY, HEAD, violations_fingerprint(report(app("web", LATEST))), "sec", "ok", AT)
    changed = report(app("web", replace(LATEST, msg="api uses image tag latest")))
    assert store.active(KEY, HEAD, violations_fingerprint(changed)) is None


def test_override_is_per_pull_request(store):
    fp = violations_fingerprint(report(app("web", LATEST)))
    store.record(KEY, HEAD, fp, "sec", "ok", AT)
    assert store.active("github:acme/deploy#13", HEAD, fp) is None


def test_latest_override_wins(store):
    fp = violations_fingerprint(report(app("web", LATEST)))
    store.record(KEY, HEAD, fp, "alice", "first", AT)
    second = store.record(KEY, HEAD, fp, "bob", "second", AT + timedelta(minutes=1))
    assert store.active(KEY, HEAD, fp) == second


def test_history_survives_reopening_the_database(tmp_path):
    path = tmp_path / "sluice.db"
    first = OverrideStore(open_database(None, path))
    fp1 = violations_fingerprint(report(app("web", LATEST)))
    fp2 = violations_fingerprint(report(app("web", LATEST, ROOT), head=NEW_HEAD))
    a = first.record(KEY, HEAD, fp1, "alice", "pinned by digest", AT)
    b = first.record(
        KEY, NEW_HEAD, fp2, "bob", "root needed for migration", AT + timedelta(hours=1)
    )
    first.record("github:acme/deploy#99", HEAD, fp1, "carol", "other PR", AT)
    del first

    reopened = OverrideStore(open_database(None, path))
    assert reopened.history(KEY) == [a, b]
    assert reopened.active(KEY, NEW_HEAD, fp2) == b
    assert reopened.history("github:acme/deploy#1") == []


def test_timestamps_are_stored_in_utc(store):
    fp = violations_fingerprint(report(app("web", LATEST)))
    cest = timezone(timedelta(hours=2))
    recorded = store.record(KEY, HEAD, fp, "alice", "", datetime(2026, 6, 1, 12, 0, tzinfo=cest))
    assert store.history(KEY)[0].at == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    assert recorded.at.utcoffset() == timedelta(0)


def test_audit_log_is_append_only(database, store):
    store.record(KEY, HEAD, violations_fingerprint(report(app("web", LATEST))), "a", "x", AT)
    for tamper in ("UPDATE policy_overrides SET actor = 'mallory'", "DELETE FROM policy_overrides"):
        with pytest.raises(StorageError, match="append-only"), database.transaction() as tx:
            tx.execute(tamper)
    assert [o.actor for o in store.history(KEY)] == ["a"]


def test_database_uses_wal_and_shares_the_file(tmp_path):
    path = tmp_path / "sluice.db"
    queue = JobQueue(path)  # the job queue's own tables in the same file
    queue.enqueue(NewJob("command", "github", "o/r", KEY, {"x": 1}))
    store = OverrideStore(queue.database)
    store.record(KEY, HEAD, violations_fingerprint(report(app("web", LATEST))), "a", "x", AT)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT payload FROM jobs").fetchall() == [('{"x":1}',)]
        assert conn.execute("SELECT actor FROM policy_overrides").fetchall() == [("a",)]


def test_writer_waits_for_a_concurrent_transaction(tmp_path):
    path = tmp_path / "sluice.db"
    store = OverrideStore(open_database(None, path))
    fp = violations_fingerprint(report(app("web", LATEST)))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer (the queue) holds the write lock
    done = threading.Event()

    def write():
        store.record(KEY, HEAD, fp, "alice", "while locked", AT)
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    assert not done.wait(0.3)  # blocked, not failed
    blocker.execute("COMMIT")
    blocker.close()
    thread.join(5)
    assert done.is_set()
    assert [o.reason for o in store.history(KEY)] == ["while locked"]


def test_concurrent_records_from_threads_all_land(store):
    fp = violations_fingerprint(report(app("web", LATEST)))
    threads = [
        threading.Thread(target=store.record, args=(KEY, HEAD, fp, f"user{i}", "r", AT))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(o.actor for o in store.history(KEY)) == sorted(f"user{i}" for i in range(8))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pr_key": " "}, "pr_key must not be empty"),
        ({"head_sha": "abc123"}, "full lowercase commit SHA"),
        ({"head_sha": "A" * 40}, "full lowercase commit SHA"),
        ({"violations_fp": "nope"}, "sha256 hex digest"),
        ({"actor": ""}, "actor must not be empty"),
        ({"reason": "x" * 2001}, "at most 2000"),
        ({"at": datetime(2026, 1, 1)}, "timezone-aware"),
    ],
)
def test_bad_records_are_refused_and_nothing_is_written(store, kwargs, message):
    args = {
        "pr_key": KEY,
        "head_sha": HEAD,
        "violations_fp": violations_fingerprint(report(app("web", LATEST))),
        "actor": "alice",
        "reason": "ok",
        "at": AT,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        store.record(**args)
    assert store.history(KEY) == []


def test_sha256_heads_are_accepted(store):
    fp = violations_fingerprint(report(app("web", LATEST)))
    assert store.record(KEY, "d" * 64, fp, "alice", "", AT).head_sha == "d" * 64


# --- applying an override to a report ------------------------------------------------------


def test_apply_override_turns_policy_failure_into_warn_with_marker(store):
    failing = report(app("web", LATEST), app("api", LIMITS), app("db"))
    assert failing.verdict == "fail"
    override = store.record(
        KEY, HEAD, violations_fingerprint(failing), "sec-lead", "pinned by digest", AT
    )
    result = apply_override(failing, override)

    assert result.verdict == "warn"
    assert [a.policy.verdict for a in result.apps] == ["warn", "warn", "pass"]
    # The denials stay visible; only their effect is overridden.
    assert result.apps[0].policy.violations == [LATEST]
    data = json.loads(json.dumps(result.to_dict()))
    assert data["override"] == {
        "by": "sec-lead",
        "reason": "pinned by digest",
        "head": HEAD,
        "at": "2026-11-27T09:30:00Z",
        "violations": override.violations_fp,
    }
    # The input report is untouched.
    assert failing.verdict == "fail"
    assert failing.apps[0].policy.verdict == "fail"
    assert "override" not in failing.to_dict()


def test_apply_override_keeps_other_gates_failing(store):
    unsigned = report(app("web", LATEST), signatures="fail")
    override = store.record(KEY, HEAD, violations_fingerprint(unsigned), "sec", "ok", AT)
    assert apply_override(unsigned, override).verdict == "fail"

    broken = report(app("web", LATEST), app("api", status="error"))
    override = store.record(KEY, HEAD, violations_fingerprint(broken), "sec", "ok", AT)
    assert apply_override(broken, override).verdict == "fail"


def test_apply_override_leaves_policy_engine_errors_alone(store):
    errored = report(app("web", LATEST))
    errored.apps[0].policy.verdict = "error"
    errored.apps[0].policy.error = "rego: undefined function"
    errored.verdict = "error"
    override = store.record(KEY, HEAD, violations_fingerprint(errored), "sec", "ok", AT)
    result = apply_override(errored, override)
    assert result.apps[0].policy.verdict == "error"
    assert result.verdict == "error"


def test_apply_override_refuses_a_stale_head(store):
    override = store.record(
        KEY, HEAD, violations_fingerprint(report(app("web", LATEST))), "sec", "ok", AT
    )
    with pytest.raises(ValueError, match="a new push voids it"):
        apply_override(report(app("web", LATEST), head=NEW_HEAD), override)


def test_apply_override_refuses_changed_violations(store):
    override = store.record(
        KEY, HEAD, violations_fingerprint(report(app("web", LATEST))), "sec", "ok", AT
    )
    with pytest.raises(ValueError, match="violations changed"):
        apply_override(report(app("web", LATEST, ROOT)), override)


def test_report_without_override_has_no_override_key():
    assert "override" not in report(app("web")).to_dict()

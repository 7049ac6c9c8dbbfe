"""Configuration and health of ``sluice serve`` on PostgreSQL: the shared fingerprint key,
roles, /readyz and /metrics per replica."""

from __future__ import annotations

import subprocess

import psycopg
import pytest
import requests

from bot.config import ConfigError
from bot.config.server import ServerConfig
from bot.diff.secrets import load_or_create_key
from bot.server.reports import ReportPages
from bot.server.serve import install_fingerprint_key
from bot.server.storage.postgres import PostgresDatabase
from tests.botkit import SLUICE, github_delivery, server_env, wait_for
from tests.replicakit import FINGERPRINT_KEY, Replica, replica_env

PG = "postgresql://sluice@db.internal:5432/sluice"


def config(tmp_path, **env: str) -> ServerConfig:
    return ServerConfig.from_env({"SLUICE_DATA_DIR": str(tmp_path), **env})


def test_sqlite_stays_the_default_and_needs_no_key(tmp_path):
    storage = config(tmp_path, HOSTNAME="pod-a").storage
    assert storage.database_url is None and storage.fingerprint_key is None
    assert storage.replica_id == "pod-a"
    assert (storage.write_limit, storage.write_window_s) == (80, 60.0)


def test_postgres_without_a_shared_fingerprint_key_refuses_to_start(tmp_path):
    with pytest.raises(ConfigError, match="SLUICE_FINGERPRINT_KEY"):
        config(tmp_path, SLUICE_DATABASE_URL=PG)
    env = server_env(tmp_path / "data", SLUICE_DATABASE_URL=PG)
    proc = subprocess.run(
        [str(SLUICE), "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "SLUICE_FINGERPRINT_KEY" in proc.stderr and "Traceback" not in proc.stderr


def test_fingerprint_key_from_env_or_a_mounted_file(tmp_path):
    from_env = config(tmp_path, SLUICE_DATABASE_URL=PG, SLUICE_FINGERPRINT_KEY=FINGERPRINT_KEY)
    assert from_env.storage.fingerprint_key == bytes.fromhex(FINGERPRINT_KEY)
    raw = tmp_path / "raw.key"
    raw.write_bytes(bytes(range(32)))
    text = tmp_path / "hex.key"
    text.write_text(FINGERPRINT_KEY + "\n")
    for path, key in ((raw, bytes(range(32))), (text, bytes.fromhex(FINGERPRINT_KEY))):
        loaded = config(tmp_path, SLUICE_DATABASE_URL=PG, SLUICE_FINGERPRINT_KEY_FILE=str(path))
        assert loaded.storage.fingerprint_key == key


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SLUICE_DATABASE_URL": "mysql://db/sluice"}, "postgresql://"),
        ({"SLUICE_FINGERPRINT_KEY": "hunter2-not-hex"}, "64 hex digits"),
        ({"SLUICE_FINGERPRINT_KEY_FILE": "/nonexistent/key"}, "cannot read"),
        ({"SLUICE_FORGE_WRITE_BUDGET": "lots"}, "LIMIT/SECONDS"),
        ({"SLUICE_FORGE_WRITE_BUDGET": "0/60"}, "LIMIT/SECONDS"),
    ],
)
def test_bad_storage_settings_are_clear_errors(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message) as caught:
        config(tmp_path, **env)
    assert "hunter2" not in str(caught.value)  # a key value is never echoed


def test_every_replica_installs_the_configured_key(tmp_path):
    keys = []
    for name in ("a", "b"):
        cfg = config(
            tmp_path / name, SLUICE_DATABASE_URL=PG, SLUICE_FINGERPRINT_KEY=FINGERPRINT_KEY
        )
        # A key this pod's disk held from before is replaced, not kept.
        load_or_create_key(cfg.data_dir / "cache" / "fingerprint.key")
        install_fingerprint_key(cfg)
        keys.append(load_or_create_key(cfg.data_dir / "cache" / "fingerprint.key"))
        assert (cfg.data_dir / "cache" / "fingerprint.key").stat().st_mode & 0o077 == 0
    assert keys == [bytes.fromhex(FINGERPRINT_KEY)] * 2


def test_roles_readiness_and_per_replica_metrics(tmp_path, pg_url):
    intake = Replica(replica_env(tmp_path, "in", pg_url, github_url="http://127.0.0.1:9"),
                     tmp_path / "in.log", role="intake")  # fmt: skip
    worker = Replica(replica_env(tmp_path, "wk", pg_url, github_url="http://127.0.0.1:9"),
                     tmp_path / "wk.log", role="worker")  # fmt: skip
    intake.start()
    try:
        # Intake alone is ready: it needs the database, not a worker pool.
        assert requests.get(f"{intake.url}/readyz", timeout=5).json()["reason"] == "database ok"
        worker.start()
        refused = requests.post(
            f"{worker.url}/webhooks/github", **github_delivery("ping", {}), timeout=5
        )
        assert refused.status_code == 503 and "--role worker" in refused.json()["error"]
        assert (
            "job workers alive" in requests.get(f"{worker.url}/readyz", timeout=5).json()["reason"]
        )
        payload = {"zen": "x", "hook_id": 1}
        assert intake.github("ping", payload).status_code == 202
        metrics = requests.get(f"{worker.url}/metrics", timeout=5).text
        assert "sluice_queue_depth" in metrics and "sluice_webhooks_total{" not in metrics
        # A report page one replica's job stored is served by any replica.
        database = PostgresDatabase(pg_url)
        try:
            page = ReportPages(database).put("<p>report</p>", '{"verdict": "pass"}')
        finally:
            database.close()
        for replica in (intake, worker):
            served = requests.get(f"{replica.url}/reports/{page.token}.json", timeout=5)
            assert served.status_code == 200 and served.json() == {"verdict": "pass"}
        # The database goes away: readiness says so on every role.
        with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {pg_url.rsplit('/', 1)[1]} WITH (FORCE)")
        for replica in (intake, worker):
            wait_for(lambda r=replica: requests.get(f"{r.url}/readyz", timeout=10).status_code
                     == 503, 30, "readiness to report the database")  # fmt: skip
            reason = requests.get(f"{replica.url}/readyz", timeout=10).json()["reason"]
            assert reason.startswith("database unavailable"), reason
            assert "postgresql://" not in reason
    finally:
        worker.stop()
        intake.stop()

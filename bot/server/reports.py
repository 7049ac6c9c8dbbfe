"""Full report pages, stored for a while and served at ``/reports/<token>``.

The token is the capability: 32 random bytes, URL-safe. Whoever can read the PR
comment can open the page; nobody can list or guess pages. A tiny interface
(put/get/expire) over the storage seam: the bot's database (PostgreSQL with
several replicas, so any replica serves any page), or a SQLite file in the data
directory.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask import Flask, Response

from bot.commands.help import who_may_run
from bot.config.server import RepoSettings, ServerConfig
from bot.forge.base import Forge, ForgeError, PullRequest
from bot.models import Report
from bot.report import MARKER, Approvals, CommentContext, to_json
from bot.report.html import render_html
from bot.report.markdown import mark_stale
from bot.server.storage.base import Database
from bot.server.storage.sqlite import SqliteDatabase

DEFAULT_RETENTION = timedelta(days=30)
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class ReportPage:
    token: str
    html: str
    json: str
    created_at: datetime
    expires_at: datetime


class ReportPages:
    """Pages in the bot's database (``report_pages``): a ``Database`` of the storage seam,
    so that every replica serves every page, or a SQLite file of their own."""

    def __init__(
        self, store: str | Path | Database, *, retention: timedelta = DEFAULT_RETENTION
    ) -> None:
        self.retention = retention
        if isinstance(store, Database):
            self._db = store  # its migrations made the table
            return
        self.path = Path(store)
        self._db = SqliteDatabase(self.path)
        with self._db.transaction() as tx:
            tx.execute(
                "CREATE TABLE IF NOT EXISTS report_pages (token TEXT PRIMARY KEY, html TEXT NOT NULL,"
                " json TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT NOT NULL)"
            )
            tx.execute(
                "CREATE INDEX IF NOT EXISTS report_pages_expiry ON report_pages (expires_at)"
            )

    def put(self, html: str, json_text: str, now: datetime | None = None) -> ReportPage:
        """Store a page under a fresh token; old pages past their time are dropped."""
        now = now or datetime.now(UTC)
        page = ReportPage(secrets.token_urlsafe(32), html, json_text, now, now + self.retention)
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO report_pages (token, html, json, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (page.token, html, json_text, now.isoformat(), page.expires_at.isoformat()),
            )
        self.expire(now)
        return page

    def get(self, token: str, now: datetime | None = None) -> ReportPage | None:
        """The page for ``token``, or None if it never existed or has expired."""
        if not TOKEN_PATTERN.match(token):
            return None
        now = now or datetime.now(UTC)
        with self._db.read() as tx:
            row = tx.one(
                "SELECT token, html, json, created_at, expires_at FROM report_pages "
                "WHERE token = ?",
                (token,),
            )
        if row is None:
            return None
        page = ReportPage(
            row["token"], row["html"], row["json"],
            datetime.fromisoformat(row["created_at"]), datetime.fromisoformat(row["expires_at"]),
        )  # fmt: skip
        return page if page.expires_at > now else None

    def expire(self, now: datetime | None = None) -> int:
        """Drop every page past its time; how many were dropped."""
        now = now or datetime.now(UTC)
        with self._db.transaction() as tx:
            return tx.execute(
                "DELETE FROM report_pages WHERE expires_at <= ?", (now.isoformat(),)
            ).rowcount


PAGE_HEADERS = {
    # The page runs no script at all; its only styles are inline.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
    "X-Robots-Tag": "noindex",
}


def retention_from_env(value: str | None) -> timedelta:
    """``SLUICE_REPORT_RETENTION_DAYS`` (default 30): how long report pages are kept."""
    if value is None or not value.strip():
        return DEFAULT_RETENTION
    try:
        days = float(value)
    except ValueError:
        days = -1
    if not 0 < days <= 3650:
        raise ValueError(
            f"SLUICE_REPORT_RETENTION_DAYS must be a number of days from 0 to 3650, got {value!r}"
        )
    return timedelta(days=days)


def open_pages(
    data_dir: Path, env: dict[str, str] | None = None, *, database: Database | None = None
) -> ReportPages:
    """The store in ``database`` (several replicas: every one serves every page), else in
    ``data_dir``, with the retention ``env`` sets (default: os.environ)."""
    env = dict(os.environ) if env is None else env
    return ReportPages(
        database if database is not None else Path(data_dir) / "reports.sqlite3",
        retention=retention_from_env(env.get("SLUICE_REPORT_RETENTION_DAYS")),
    )


def publish_page(
    pages: ReportPages | None,
    public_url: str | None,
    report: Report,
    *,
    title: str,
    context: CommentContext,
) -> CommentContext:
    """Store the full page for ``report``; ``context`` with its ``report_url`` set.
    Without ``SLUICE_PUBLIC_URL`` nobody could open it, so nothing is stored."""
    if pages is None or not public_url:
        return context
    json_text = to_json(report)
    html = render_html(report, json_text, title=title, context=context)
    page = pages.put(html, json_text, context.made_at)
    return replace(context, report_url=f"{public_url.rstrip('/')}/reports/{page.token}")


def add_report_routes(app: Flask, pages: ReportPages) -> None:
    """``GET /reports/<token>`` (the page) and ``/reports/<token>.json`` (the JSON)."""

    @app.get("/reports/<token>")
    def report_page(token: str) -> Response:
        as_json = token.endswith(".json")
        page = pages.get(token.removesuffix(".json"))
        if page is None:
            return Response("no such report (it may have expired)\n", 404, PAGE_HEADERS)
        if as_json:
            return Response(page.json, 200, PAGE_HEADERS, content_type="application/json")
        return Response(page.html, 200, PAGE_HEADERS, content_type="text/html; charset=utf-8")


def comment_context(
    config: ServerConfig, forge: Forge, pr: PullRequest, now: datetime
) -> CommentContext:
    """What the PR comment says beyond the report: when it was made, who may run
    /approve-policy here, and the approvals that count for this exact head."""
    settings = config.repo_settings(forge.name, pr.repo.full_name)
    try:
        who = who_may_run("approve-policy", settings.command_rules())
    except ValueError:
        who = ""
    return CommentContext(
        made_at=now,
        approve_policy_who=who,
        approvals=_approvals(config, settings, forge, pr),
    )


def _approvals(
    config: ServerConfig, settings: RepoSettings, forge: Forge, pr: PullRequest
) -> Approvals | None:
    """The approvals the merge gate would count now (distinct reviewers of exactly the
    head, not the author, not the bot); None if the forge cannot say."""
    try:
        standing = forge.approvals(pr)
        bot = (config.bot_login or forge.bot_login()).lower()
    except ForgeError:
        return None
    valid = {
        a.user.lower()
        for a in standing
        if a.sha == pr.head_sha and a.user.lower() not in (pr.author.lower(), bot)
    }
    return Approvals(len(valid), config.approvals_required(settings), pr.head_sha)


def mark_report_stale(forge: Forge, pr: PullRequest, bot_login: str) -> None:
    """Say at the top of the PR's report comment that a newer head is being previewed."""
    for comment in forge.list_comments(pr):
        if comment.author.lower() == bot_login.lower() and comment.body.startswith(MARKER):
            body = mark_stale(comment.body, pr.head_sha)
            if body != comment.body:
                forge.edit_comment(pr, comment.id, body)
            return

"""Webhook authentication and parsing, on real sample payloads.

GitHub samples: @octokit/webhooks-examples (api.github.com); GitLab samples follow
the payloads in GitLab's webhook events documentation.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bot.forge.webhooks import (
    CommentEvent,
    PayloadError,
    PullRequestEvent,
    SignatureError,
    Unsupported,
    event_from_dict,
    event_to_dict,
    github_signature,
    parse_github,
    parse_gitlab,
    verify_github_signature,
    verify_gitlab_token,
)

DATA = Path(__file__).parents[1] / "data" / "webhooks"
SECRET = "It's a Secret to Everybody"


def sample(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def gh(event: str, payload: dict[str, Any]):
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    return parse_github(headers, json.dumps(payload).encode())


def gl(event: str, payload: dict[str, Any]):
    headers = {
        "X-Gitlab-Event": event,
        "X-Gitlab-Event-UUID": "13792a34-cac6-4fda-95a8-c58e00a3954e",
    }
    return parse_gitlab(headers, json.dumps(payload).encode())


# -- authentication --------------------------------------------------------------------


def test_github_signature_matches_githubs_documented_example():
    # The test vector from GitHub's "Validating webhook deliveries" documentation.
    body = b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert github_signature(SECRET, body) == expected
    verify_github_signature(SECRET, body, expected)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing X-Hub-Signature-256"),
        ("", "missing X-Hub-Signature-256"),
        ("sha1=abc", "not of the form"),
        ("sha256=" + "0" * 64, "does not match"),
    ],
)
def test_github_signature_rejected(header, message):
    with pytest.raises(SignatureError, match=message):
        verify_github_signature(SECRET, b"Hello, World!", header)


def test_github_signature_over_a_modified_body_is_rejected():
    signature = github_signature(SECRET, b'{"a": 1}')
    with pytest.raises(SignatureError):
        verify_github_signature(SECRET, b'{"a": 2}', signature)
    with pytest.raises(SignatureError):
        verify_github_signature("another secret", b'{"a": 1}', signature)


def test_gitlab_token():
    verify_gitlab_token("tok", "tok")
    with pytest.raises(SignatureError, match="missing X-Gitlab-Token"):
        verify_gitlab_token("tok", None)
    with pytest.raises(SignatureError, match="does not match"):
        verify_gitlab_token("tok", "tok2")


# -- GitHub ----------------------------------------------------------------------------


def test_github_pull_request_opened():
    delivery = gh("pull_request", sample("github_pull_request_opened.json"))
    assert delivery.forge == "github"
    assert delivery.delivery_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    event = delivery.event
    assert isinstance(event, PullRequestEvent)
    assert event.action == "opened"
    assert event.repo.full_name == "Codertocat/Hello-World"
    assert event.repo.clone_url == "https://github.com/Codertocat/Hello-World.git"
    assert event.number == 2
    assert event.head_sha == "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
    assert event.base_sha == "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
    assert (event.base_ref, event.head_ref) == ("master", "changes")
    assert event.author == "Codertocat"
    assert not event.is_fork and not event.draft and not event.base_changed
    assert event.pr_key == "github:Codertocat/Hello-World#2"


def test_github_synchronize_and_ready_for_review():
    assert gh("pull_request", sample("github_pull_request_synchronize.json")).event.action == (
        "synchronize"
    )
    ready = gh("pull_request", sample("github_pull_request_ready_for_review.json")).event
    assert ready.action == "ready_for_review"


def test_github_closed_versus_merged():
    payload = sample("github_pull_request_closed.json")
    closed = gh("pull_request", payload).event
    assert closed.action == "closed" and closed.merge_sha is None
    payload["pull_request"]["merged"] = True
    merged = gh("pull_request", payload).event
    assert merged.action == "merged"
    assert merged.merge_sha == "c4295bd74fb0f4fda03689c3df3f2803b658fd85"


def test_github_fork_and_deleted_fork():
    payload = sample("github_pull_request_opened.json")
    payload["pull_request"]["head"]["repo"]["full_name"] = "mallory/Hello-World"
    payload["pull_request"]["head"]["repo"]["clone_url"] = "https://github.com/mallory/x.git"
    event = gh("pull_request", payload).event
    assert event.is_fork and event.head_clone_url == "https://github.com/mallory/x.git"
    payload["pull_request"]["head"]["repo"] = None
    assert gh("pull_request", payload).event.is_fork


def test_github_edited_only_matters_when_the_base_changed():
    payload = sample("github_pull_request_opened.json")
    payload["action"] = "edited"
    payload["changes"] = {"title": {"from": "old title"}}
    assert isinstance(gh("pull_request", payload).event, Unsupported)
    payload["changes"] = {"base": {"ref": {"from": "develop"}, "sha": {"from": "abc"}}}
    event = gh("pull_request", payload).event
    assert event.action == "edited" and event.base_changed


def test_github_unsupported_events():
    labeled = gh("pull_request", sample("github_pull_request_labeled.json")).event
    assert labeled == Unsupported("pull_request action 'labeled' is not handled")
    assert isinstance(gh("ping", sample("github_ping.json")).event, Unsupported)
    assert gh("star", {"action": "created"}).event == Unsupported("event 'star' is not handled")
    # Comments on plain issues are not commands.
    issue_comment = gh("issue_comment", sample("github_issue_comment_created.json")).event
    assert issue_comment == Unsupported("issue_comment on an issue, not a pull request")


def pr_comment(action: str = "created") -> dict[str, Any]:
    payload = copy.deepcopy(sample("github_issue_comment_created.json"))
    payload["action"] = action
    payload["issue"]["pull_request"] = {
        "url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/1",
        "html_url": "https://github.com/Codertocat/Hello-World/pull/1",
    }
    payload["comment"]["body"] = "/sync web-prod"
    return payload


def test_github_comment_on_pull_request():
    event = gh("issue_comment", pr_comment()).event
    assert isinstance(event, CommentEvent)
    assert event.number == 1 and event.comment_id == 492700400
    assert event.body == "/sync web-prod" and event.author == "Codertocat"
    assert event.action == "created" and event.is_pull_request and not event.author_is_bot
    assert gh("issue_comment", pr_comment("edited")).event.action == "edited"
    assert gh("issue_comment", pr_comment("deleted")).event.action == "deleted"
    bot = pr_comment()
    bot["comment"]["user"]["type"] = "Bot"
    assert gh("issue_comment", bot).event.author_is_bot


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"action": "opened"}', "'pull_request' is missing"),
        (b'{"action": "opened", "pull_request": {"number": "2"}}', "'base' is missing"),
    ],
)
def test_github_malformed_payloads(body, message):
    headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d1"}
    with pytest.raises(PayloadError, match=message):
        parse_github(headers, body)


def test_missing_delivery_headers():
    with pytest.raises(PayloadError, match="missing X-GitHub-Delivery"):
        parse_github({"X-GitHub-Event": "ping"}, b"{}")
    with pytest.raises(PayloadError, match="missing X-GitHub-Event"):
        parse_github({"X-GitHub-Delivery": "d"}, b"{}")
    with pytest.raises(PayloadError, match="missing X-Gitlab-Event-UUID"):
        parse_gitlab({"X-Gitlab-Event": "Note Hook"}, b"{}")


# -- GitLab ----------------------------------------------------------------------------


def mr(action: str, **attrs: Any) -> dict[str, Any]:
    payload = sample("gitlab_merge_request_open.json")
    payload["object_attributes"]["action"] = action
    payload["object_attributes"].update(attrs)
    return payload


def test_gitlab_merge_request_open():
    delivery = gl("Merge Request Hook", mr("open"))
    assert delivery.delivery_id == "13792a34-cac6-4fda-95a8-c58e00a3954e"
    event = delivery.event
    assert isinstance(event, PullRequestEvent)
    assert event.forge == "gitlab" and event.action == "opened"
    assert event.repo.full_name == "gitlabhq/gitlab-test" and event.repo.project_id == 1
    assert event.repo.clone_url == "http://example.com/gitlabhq/gitlab-test.git"
    assert event.number == 1
    assert event.head_sha == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    assert event.base_sha is None
    assert (event.base_ref, event.head_ref) == ("master", "ms-viewport")
    assert event.author == "root" and not event.is_fork and not event.draft
    assert event.pr_key == "gitlab:gitlabhq/gitlab-test#1"


def test_gitlab_update_with_new_commits_is_synchronize():
    event = gl("Merge Request Hook", mr("update", oldrev="0" * 40)).event
    assert event.action == "synchronize" and event.author is None


def test_gitlab_update_without_new_commits_is_ignored():
    payload = mr("update")
    payload["changes"] = {"title": {"previous": "a", "current": "b"}}
    assert isinstance(gl("Merge Request Hook", payload).event, Unsupported)


def test_gitlab_update_of_target_branch_and_draft_state():
    payload = mr("update")
    payload["changes"] = {"target_branch": {"previous": "main", "current": "release"}}
    event = gl("Merge Request Hook", payload).event
    assert event.action == "edited" and event.base_changed
    payload["changes"] = {"draft": {"previous": True, "current": False}}
    assert gl("Merge Request Hook", payload).event.action == "ready_for_review"


def test_gitlab_close_reopen_merge_and_fork():
    assert gl("Merge Request Hook", mr("close")).event.action == "closed"
    assert gl("Merge Request Hook", mr("reopen")).event.action == "reopened"
    merged = gl("Merge Request Hook", mr("merge", merge_commit_sha="f" * 40)).event
    assert merged.action == "merged" and merged.merge_sha == "f" * 40
    assert gl("Merge Request Hook", mr("open", source_project_id=42)).event.is_fork
    approved = gl("Merge Request Hook", mr("approved")).event
    assert approved == Unsupported("merge request action 'approved' is not handled")


def test_gitlab_note_on_merge_request():
    event = gl("Note Hook", sample("gitlab_note_merge_request.json")).event
    assert isinstance(event, CommentEvent)
    assert event.repo.full_name == "gitlabhq/gitlab-test" and event.repo.project_id == 5
    assert event.number == 1 and event.comment_id == 1244
    assert event.body == "/sync" and event.author == "root" and event.action == "created"
    payload = sample("gitlab_note_merge_request.json")
    payload["object_attributes"]["action"] = "update"
    assert gl("Note Hook", payload).event.action == "edited"
    payload["object_attributes"]["noteable_type"] = "Issue"
    assert gl("Note Hook", payload).event == Unsupported("note on 'Issue', not a merge request")
    assert isinstance(gl("Tag Push Hook", {"object_kind": "tag_push"}).event, Unsupported)


def test_events_round_trip_through_json():
    for event in (
        gh("pull_request", sample("github_pull_request_opened.json")).event,
        gh("issue_comment", pr_comment()).event,
        gl("Merge Request Hook", mr("open")).event,
    ):
        data = json.loads(json.dumps(event_to_dict(event)))
        assert event_from_dict(data) == event

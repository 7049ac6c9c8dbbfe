"""Chat-ops commands: what counts as a command, who may run it, and the help replies."""

from __future__ import annotations

import pytest

from bot.commands import (
    COMMAND_NAMES,
    CommandError,
    CommandRule,
    CommandRules,
    ParsedCommand,
    UnknownCommand,
    authorize,
    help_text,
    parse_commands,
    unknown_command_reply,
)
from bot.forge.base import ForgeError, Permission

BOT = "sluice[bot]"


def names(body: str, bot_login: str | None = BOT) -> list[str]:
    return [c.name for c in parse_commands(body, bot_login)]


def only(body: str, bot_login: str | None = BOT):
    found = parse_commands(body, bot_login)
    assert len(found) == 1, found
    return found[0]


# --- where commands are found -------------------------------------------------------------


def test_plain_command_with_apps():
    cmd = only("/sync web-prod api-prod")
    assert cmd == ParsedCommand(
        name="sync", args=("web-prod", "api-prod"), raw="/sync web-prod api-prod", line=1
    )


def test_several_commands_in_order_with_line_numbers():
    body = "Looks good.\n/diff web-prod\nthen\n/policy\n/sync web-prod\n"
    found = parse_commands(body, BOT)
    assert [(c.name, c.line) for c in found] == [("diff", 2), ("policy", 4), ("sync", 5)]


def test_command_must_start_the_line():
    assert names("please run /sync web-prod") == []
    assert names("`/sync` is how you deploy") == []


def test_up_to_three_spaces_of_indentation_is_still_a_command():
    assert names("   /sync web") == ["sync"]


def test_indented_code_block_is_not_a_command():
    assert names("Example:\n\n    /sync web\n") == []
    assert names("\t/sync web") == []
    assert names("  \t/sync web") == []


def test_indented_continuation_of_a_paragraph_is_not_a_command():
    # Markdown renders it as paragraph text, but four spaces never make a command.
    assert names("some text\n    /sync web") == []


@pytest.mark.parametrize(
    "body",
    [
        "```\n/sync web\n```",
        "~~~\n/sync web\n~~~",
        "```bash\n/sync web\n```",
        "````\n```\n/sync web\n```\n````",
        "~~~\n```\n/sync web\n~~~",
        "- item\n  ```\n  /sync web\n  ```",
        "1. step\n   ```\n   /sync web\n   ```",
        "text\n```\n/sync web",  # an unclosed fence runs to the end of the comment
    ],
)
def test_fenced_code_is_not_a_command(body):
    assert names(body) == []


def test_fence_in_a_list_item_ends_with_the_item():
    # "/diff" is left of the item's content, so it ends the item and its fence;
    # the next "```" opens a new fence that hides "/policy".
    assert names("- ```\n  /sync web\n/diff web\n```\n/policy") == ["diff"]


def test_quote_inside_a_list_item_and_its_lazy_line_are_ignored():
    assert names("- > we could\n/sync web") == []
    assert names("* > /sync web") == []


def test_command_after_a_closed_fence_counts():
    body = "```\n/sync web\n```\n/diff web\n~~~yaml\n/rollback\n~~~\n/policy"
    assert names(body) == ["diff", "policy"]


def test_fence_with_backticks_in_info_string_is_inline_code_not_a_fence():
    # "```a```" is an inline code span, so the next line is ordinary text.
    assert names("```a```\n/diff web") == ["diff"]


def test_shorter_closing_fence_does_not_close():
    assert names("````\n```\n/sync web") == []


def test_quoted_commands_are_ignored():
    assert names("> /sync web") == []
    assert names("> > /sync web") == []
    assert names("  > /sync web") == []


def test_lazy_continuation_of_a_quote_is_ignored():
    # Markdown renders the second line inside the quote.
    assert names("> we should deploy\n/sync web") == []


def test_command_after_quote_and_blank_line_counts():
    body = "> /sync web\n\n/diff web"
    assert names(body) == ["diff"]


def test_command_on_line_that_starts_inside_an_inline_code_span():
    assert names("run this: `\n/sync web\n` later") == []
    assert names("two ``code `\n/sync\n`` spans") == []


def test_unmatched_backtick_does_not_hide_commands():
    assert names("a stray ` here\n/diff web") == ["diff"]
    # A run of a different length does not close the span.
    assert names("``x`\n/diff") == ["diff"]


def test_escaped_backtick_opens_no_span():
    assert names("escaped \\`\n/diff web\n`") == ["diff"]


def test_backslash_inside_a_code_span_is_literal():
    # "`\\`" is a complete span (backslashes do not escape inside spans).
    assert names("`\\`\n/diff web\n`") == ["diff"]
    # An escaped backslash does not escape the backtick after it.
    assert names("\\\\`\n/sync web\n`") == []


def test_code_span_does_not_cross_a_blank_line():
    assert names("open ` here\n\n/diff web `") == ["diff"]


def test_html_comment_hides_commands():
    assert names("<!--\n/sync web\n-->\n/diff") == ["diff"]
    assert names("<!-- note -->\n/diff") == ["diff"]
    # A comment opened mid-line or inside a quote or list item hides what follows, too.
    assert names("see <!-- hidden\n/sync web\n-->\n/diff") == ["diff"]
    assert names("> <!--\n\n/sync web") == []
    assert names("- <!--\n\n/sync web\n-->\n/diff") == ["diff"]
    assert names("<!-- a --> <!-- b\n/sync web") == []
    assert names("<!--\nx --> <!-- y\n/sync web\n-->\n/diff") == ["diff"]


def test_crlf_and_cr_line_endings():
    assert names("hello\r\n/diff web\r\n/sync web\r\n") == ["diff", "sync"]
    assert names("hello\r/policy") == ["policy"]
    assert only("/sync web\r\n").args == ("web",)


def test_unicode_line_separator_does_not_start_a_line():
    assert names("text\u2028/sync web") == []


def test_mention_form():
    assert only("@sluice[bot] sync web").args == ("web",)
    assert only("@sluice diff web").name == "diff"  # GitHub App "[bot]" suffix optional
    assert only("@Sluice /policy").name == "policy"  # case-insensitive login, optional slash


def test_mention_of_someone_else_or_without_login_is_not_a_command():
    assert names("@alice sync web") == []
    assert names("@sluicebot sync web") == []
    assert names("@sluice sync web", bot_login=None) == []
    assert names("@sluice") == []


def test_mention_with_unknown_word_is_unknown_command():
    assert only("@sluice deploy web") == UnknownCommand(
        name="deploy", raw="@sluice deploy web", line=1
    )


def test_slash_text_that_is_not_a_command_word_is_ignored():
    assert names("/etc/hosts is broken\n/sync, please\n/ space") == []


def test_unknown_command():
    assert only("/sycn web") == UnknownCommand(name="sycn", raw="/sycn web", line=1)


def test_command_names_are_case_insensitive():
    assert only("/Sync web").name == "sync"


def test_duplicate_apps_are_kept_once_in_order():
    assert only("/diff b a b").args == ("b", "a")


@pytest.mark.parametrize(
    "arg", ["Web", "web;rm", "$(id)", "a|b", "web&", "../etc", "web-", "`web`", "x" * 64]
)
def test_invalid_app_names_are_rejected(arg):
    cmd = only(f"/sync {arg}")
    assert isinstance(cmd, CommandError)
    assert "is not a valid app name" in cmd.message


def test_leading_dash_is_an_option_not_an_app():
    cmd = only("/sync -web")
    assert isinstance(cmd, CommandError)
    assert "/sync has no option `-web`" in cmd.message


def test_error_message_quotes_user_input_inertly():
    cmd = only("/sync @everyone`**x**")
    assert isinstance(cmd, CommandError)
    assert "`@everyone'**x**`" in cmd.message


def test_rollback_to_revision():
    cmd = only("/rollback web --to v1.2.0")
    assert (cmd.args, cmd.options) == (("web",), {"to": "v1.2.0"})
    assert only("/rollback --to=abc1234 web").options == {"to": "abc1234"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/rollback web --to", "--to needs a value"),
        ("/rollback --to --to x", "--to needs a value"),
        ("/rollback --to a --to b", "--to is given twice"),
        ("/rollback --to ../x", "is not a revision"),
        ("/rollback --to main..evil", "is not a revision"),
        ("/rollback --to=-evil", "is not a revision"),
        ("/rollback --to=$(id)", "is not a revision"),
        ("/rollback web --force", "has no option `--force`"),
        ("/rollback web -t x", "has no option `-t`"),
        ("/sync web --to v1", "/sync has no option `--to`"),
        ("/diff --all", "/diff has no option `--all`"),
    ],
)
def test_option_errors_are_clear(body, expected):
    cmd = only(body)
    assert isinstance(cmd, CommandError)
    assert expected in cmd.message
    assert cmd.raw == body


def test_usage_is_in_option_error():
    cmd = only("/rollback --to")
    assert "usage: `/rollback [app…] [--to REV]`" in cmd.message


def test_approve_policy_reason_is_free_text():
    assert only("/approve-policy").reason == ""
    assert only("/approve-policy false positive, see #12").reason == "false positive, see #12"
    assert only('/approve-policy "quoted reason"').reason == "quoted reason"
    assert only("/approve-policy --not-an-option").reason == "--not-an-option"


def test_approve_policy_reason_too_long():
    cmd = only("/approve-policy " + "x" * 600)
    assert isinstance(cmd, CommandError)
    assert "keep it under 500" in cmd.message


def test_help_ignores_trailing_words():
    assert only("/help me please") == ParsedCommand(name="help", raw="/help me please", line=1)


def test_error_and_good_commands_are_all_reported_in_order():
    found = parse_commands("/diff web\n/sync BAD\n/nope", BOT)
    assert [type(c) for c in found] == [ParsedCommand, CommandError, UnknownCommand]


def test_too_many_commands_runs_none():
    found = parse_commands("\n".join(["/diff web"] * 21), BOT)
    assert len(found) == 1
    assert isinstance(found[0], CommandError)
    assert "none of them were run" in found[0].message
    assert len(parse_commands("\n".join(["/diff web"] * 20), BOT)) == 20


def test_pathological_backticks_parse_quickly():
    import time

    body = "".join("`" * n + "a" for n in range(1, 300)) + "\n/diff\n" + "`x" * 20000
    start = time.perf_counter()
    parse_commands(body, BOT)
    assert time.perf_counter() - start < 1.0


# --- help and did-you-mean -----------------------------------------------------------------


def test_help_lists_every_command_with_usage_and_level():
    text = help_text(BOT)
    for usage, level in [
        ("`/diff [app…]`", "read"),
        ("`/policy [app…]`", "read"),
        ("`/help`", "read"),
        ("`/approve-policy [reason…]`", "maintain"),
        ("`/sync [app…]`", "write"),
        ("`/rollback [app…] [--to REV]`", "write"),
    ]:
        row = next(line for line in text.splitlines() if line.startswith(f"| {usage} "))
        assert f"| {level} access or higher |" in row
    assert "`@sluice sync web-prod`" in text


def test_help_shows_configured_levels():
    rules = CommandRules(
        commands={"sync": CommandRule(Permission.ADMIN, teams=frozenset({"acme/deployers"}))},
        policy_owner_teams=frozenset({"acme/sec"}),
    )
    text = help_text(None, rules)
    sync_row = next(line for line in text.splitlines() if line.startswith("| `/sync"))
    assert "admin access: only `acme/deployers`" in sync_row
    approve_row = next(line for line in text.splitlines() if line.startswith("| `/approve"))
    assert "policy owners only" in approve_row
    assert "address the bot" not in text  # no mention form without a bot login


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("sycn", "sync"),
        ("rollbak", "rollback"),
        ("approve", "approve-policy"),
        ("polcy", "policy"),
        ("deploy", "sync"),
        ("hlep", "help"),
        ("Diff", "diff"),
    ],
)
def test_did_you_mean(typed, meant):
    reply = unknown_command_reply(typed)
    assert f"`/{typed}`" in reply
    assert f"Did you mean `/{meant}`" in reply


def test_unknown_command_without_close_match_lists_commands():
    reply = unknown_command_reply("xyzzy")
    assert "Did you mean" not in reply
    assert all(f"`/{n}`" in reply for n in COMMAND_NAMES)


# --- authorization -------------------------------------------------------------------------


class Org:
    """Permissions and team memberships as the forge would report them."""

    def __init__(self, permissions: dict[str, Permission], teams: dict[str, set[str]]):
        self.permissions = permissions
        self.teams = teams
        self.calls: list[str] = []

    def permission_of(self, user: str) -> Permission:
        self.calls.append(f"permission {user}")
        return self.permissions.get(user, Permission.NONE)

    def is_member(self, team: str, user: str) -> bool:
        self.calls.append(f"member {team} {user}")
        return user in self.teams.get(team, set())


ORG = Org(
    {
        "reader": Permission.READ,
        "triager": Permission.TRIAGE,
        "writer": Permission.WRITE,
        "maintainer": Permission.MAINTAIN,
        "admin": Permission.ADMIN,
        "sec-lead": Permission.MAINTAIN,
        "deployer": Permission.WRITE,
    },
    {"acme/security": {"sec-lead"}, "acme/deployers": {"deployer"}},
)


def check(command, actor, rules=None, *, fork=False, self_=False, org=ORG):
    return authorize(
        command,
        actor,
        rules=rules or CommandRules(),
        permission_of=org.permission_of,
        is_member=org.is_member,
        pr_is_fork=fork,
        is_bot_self=self_,
    )


LEVELS = ["stranger", "reader", "triager", "writer", "maintainer", "admin"]


@pytest.mark.parametrize(
    ("command", "lowest"),
    [
        ("help", "reader"),
        ("diff", "reader"),
        ("policy", "reader"),
        ("sync", "writer"),
        ("rollback", "writer"),
        ("approve-policy", "maintainer"),
    ],
)
def test_default_levels(command, lowest):
    for actor in LEVELS:
        decision = check(command, actor)
        assert decision.allowed == (LEVELS.index(actor) >= LEVELS.index(lowest)), (actor, decision)


def test_refusal_reason_names_actor_levels_and_command():
    assert check("sync", "reader").reason == "@reader needs write access to run /sync (has read)"
    assert (
        check("approve-policy", "writer").reason
        == "@writer needs maintain access to run /approve-policy (has write)"
    )


def test_unknown_user_can_run_nothing_not_even_help():
    needed = {
        "help": "read",
        "diff": "read",
        "policy": "read",
        "sync": "write",
        "rollback": "write",
        "approve-policy": "maintain",
    }
    for command in COMMAND_NAMES:
        decision = check(command, "stranger")
        assert not decision.allowed
        assert decision.reason == (
            f"@stranger needs {needed[command]} access to run /{command} (has no access)"
        )


def test_parsed_command_is_accepted():
    assert check(ParsedCommand(name="sync", args=("web",)), "writer").allowed
    assert check("/sync", "writer").allowed


def test_fork_prs_never_get_deploy_commands():
    for command in ("sync", "rollback"):
        decision = check(command, "admin", fork=True)
        assert not decision.allowed
        assert "forks" in decision.reason
    assert check("diff", "reader", fork=True).allowed
    assert check("approve-policy", "maintainer", fork=True).allowed


def test_bot_self_is_refused_even_as_admin():
    org = Org({"sluice[bot]": Permission.ADMIN}, {})
    decision = check("help", "sluice[bot]", self_=True, org=org)
    assert not decision.allowed
    assert "own comments" in decision.reason
    assert org.calls == []  # refused before asking the forge anything


def test_unknown_command_name_is_refused():
    assert not check("deploy", "admin").allowed


def test_user_allowlist():
    rules = CommandRules(commands={"sync": CommandRule(Permission.WRITE, users={"Writer"})})
    assert check("sync", "writer", rules).allowed  # logins compare case-insensitively
    refused = check("sync", "admin", rules)
    assert not refused.allowed
    assert refused.reason == "@admin may not run /sync: it is limited to `writer`"
    assert check("rollback", "admin", rules).allowed  # other commands keep their defaults


def test_allowlist_still_requires_the_level():
    rules = CommandRules(commands={"sync": CommandRule(Permission.WRITE, users={"reader"})})
    decision = check("sync", "reader", rules)
    assert not decision.allowed
    assert "needs write access" in decision.reason


def test_team_allowlist():
    rules = CommandRules(
        commands={"rollback": CommandRule(Permission.WRITE, teams={"acme/deployers"})}
    )
    assert check("rollback", "deployer", rules).allowed
    decision = check("rollback", "writer", rules)
    assert not decision.allowed
    assert "members of `acme/deployers`" in decision.reason


def test_users_or_teams_allowlist():
    rules = CommandRules(
        commands={"sync": CommandRule(Permission.WRITE, users={"writer"}, teams={"acme/deployers"})}
    )
    assert check("sync", "writer", rules).allowed
    assert check("sync", "deployer", rules).allowed
    assert not check("sync", "admin", rules).allowed


def test_empty_allowlist_lets_nobody_run_the_command():
    rules = CommandRules(commands={"sync": CommandRule(Permission.WRITE, users=frozenset())})
    decision = check("sync", "admin", rules)
    assert not decision.allowed
    assert "limited to nobody" in decision.reason


def test_raised_and_lowered_levels():
    rules = CommandRules(
        commands={
            "diff": CommandRule(Permission.WRITE),
            "sync": CommandRule(Permission.TRIAGE),
        }
    )
    assert not check("diff", "reader", rules).allowed
    assert check("sync", "triager", rules).allowed


def test_level_none_cannot_be_configured():
    with pytest.raises(ValueError, match="read or higher"):
        CommandRule(Permission.NONE)


def test_unknown_command_in_rules_is_rejected():
    with pytest.raises(ValueError, match="unknown command.*deploy"):
        CommandRules(commands={"deploy": CommandRule(Permission.WRITE)})


def test_policy_owners_by_user_and_team():
    rules = CommandRules(
        policy_owner_users=frozenset({"maintainer"}),
        policy_owner_teams=frozenset({"acme/security"}),
    )
    assert check("approve-policy", "maintainer", rules).allowed
    assert check("approve-policy", "sec-lead", rules).allowed
    decision = check("approve-policy", "admin", rules)
    assert not decision.allowed
    assert decision.reason == (
        "@admin is not a policy owner; only `maintainer` and members of `acme/security` "
        "may override policy with /approve-policy"
    )
    # Owners only matter for /approve-policy.
    assert check("sync", "admin", rules).allowed


def test_policy_owner_still_needs_maintain():
    rules = CommandRules(policy_owner_users=frozenset({"writer"}))
    decision = check("approve-policy", "writer", rules)
    assert not decision.allowed
    assert "needs maintain access" in decision.reason


def test_without_policy_owners_any_maintainer_may_approve():
    assert check("approve-policy", "maintainer").allowed
    assert check("approve-policy", "admin").allowed


def test_team_lookups_stop_at_first_match_and_only_when_needed():
    org = Org({"deployer": Permission.WRITE}, {"a/one": {"deployer"}, "a/two": {"deployer"}})
    rules = CommandRules(commands={"sync": CommandRule(Permission.WRITE, teams={"a/one", "a/two"})})
    assert check("sync", "deployer", rules, org=org).allowed
    assert org.calls == ["permission deployer", "member a/one deployer"]
    org.calls.clear()
    assert check("diff", "deployer", rules, org=org).allowed
    assert org.calls == ["permission deployer"]


def test_forge_error_refuses_the_command():
    def broken(user: str) -> Permission:
        raise ForgeError("GitHub API answered 502 after 3 tries", status=502)

    decision = authorize(
        "diff",
        "writer",
        rules=CommandRules(),
        permission_of=broken,
        is_member=ORG.is_member,
        pr_is_fork=False,
        is_bot_self=False,
    )
    assert not decision.allowed
    assert "could not check @writer's access to run /diff" in decision.reason

"""The notify role, through real ansible-playbook runs of tests/playbooks/notify.yml.

A webhook receiver started by the test stands in for Slack and Discord and records what it
receives; the report callback is enabled to see what the run leaves as evidence.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT, free_port, run_playbook
from servers import LocalServer

PLAYBOOK = str(ROOT / "tests" / "playbooks" / "notify.yml")
EVENTS = ["start", "success", "rollback", "failure"]
MENTIONED = {"start", "rollback", "failure"}
REASON = "Error rate 7.5% > 5% <after switch> & rising"


def slack_ok(_h: BaseHTTPRequestHandler, _b: bytes) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "text/plain"}, b"ok"


def discord_ok(_h: BaseHTTPRequestHandler, _b: bytes) -> tuple[int, dict[str, str], bytes]:
    return 204, {}, b""


def broken(_h: BaseHTTPRequestHandler, _b: bytes) -> tuple[int, dict[str, str], bytes]:
    return 500, {"Content-Type": "text/plain"}, b"internal error"


class Chat:
    """One receiver for both services, on paths that carry a random token like the real URLs."""

    def __init__(self) -> None:
        self.slack_path = f"/services/T0ERNI/B0DEPLOY/{secrets.token_urlsafe(18)}"
        self.discord_path = f"/api/webhooks/1234567890/{secrets.token_urlsafe(30)}"
        self.broken_path = f"/api/webhooks/42/{secrets.token_urlsafe(30)}"
        self.server = LocalServer(routes={self.slack_path: slack_ok, self.discord_path: discord_ok,
                                          self.broken_path: broken})

    @property
    def slack_url(self) -> str:
        return self.server.url + self.slack_path

    @property
    def discord_url(self) -> str:
        return self.server.url + self.discord_path

    @property
    def broken_url(self) -> str:
        return self.server.url + self.broken_path

    def received(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for method, path, headers, body in self.server.requests:
            assert method == "POST", (method, path)
            assert headers.get("Content-Type") == "application/json"
            out.append((path, json.loads(body)))
        return out


@pytest.fixture
def chat() -> Iterator[Chat]:
    c = Chat()
    yield c
    c.server.close()


def notify(tmp_path: Path, *args: str, **extra: Any) -> tuple[Any, Path]:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"web1": {}, "web2": {}}, "vars": {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}))
    reports = tmp_path / "reports"
    env = {"ANSIBLE_CALLBACKS_ENABLED": "erni_report", "ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "plugins" / "callback"),
           "ERNI_REPORT_DIR": str(reports)}
    run = run_playbook("-i", str(inventory), PLAYBOOK, "-v", "-e", "release_version=1.1.0", "-e", json.dumps(extra),
                       *args, env=env)
    return run, reports / "latest"


def assert_no_url(chat: Chat, *texts: str) -> None:
    tokens = [path.rsplit("/", 1)[1] for path in (chat.slack_path, chat.discord_path, chat.broken_path)]
    for text in texts:
        for token in tokens:
            assert token not in text


def test_every_event_reaches_slack_and_discord_in_their_formats(tmp_path: Path, chat: Chat) -> None:
    run, report_dir = notify(tmp_path, notify_test_events=EVENTS, slack_webhook_url=chat.slack_url,
                             discord_webhook_url=chat.discord_url, report_url="https://ci.example/jobs/77")
    assert run.rc == 0, run.output[-3000:]
    received = chat.received()
    # Once per event and channel, not once per host.
    assert [path for path, _ in received] == [chat.slack_path, chat.discord_path] * len(EVENTS)
    colours = set()
    for event, (slack, discord) in zip(EVENTS, zip(received[::2], received[1::2], strict=True), strict=True):
        s, d = slack[1], discord[1]

        assert set(s) == {"text", "blocks"}
        assert all(b["type"] == "section" for b in s["blocks"])
        head = s["blocks"][0]["text"]
        assert head["type"] == "mrkdwn"
        assert head["text"].startswith("<!channel> ") == (event in MENTIONED)
        assert s["text"].startswith("<!channel> ") == (event in MENTIONED)
        assert "production: erni-ki 1.1.0*" in head["text"]
        fields = [f["text"] for f in s["blocks"][1]["fields"]]
        assert fields == ["*Environment*\nproduction", "*Release*\n1.1.0", "*Previous release*\n1.0.0"]
        assert all(f["type"] == "mrkdwn" for f in s["blocks"][1]["fields"])
        texts = [b["text"]["text"] for b in s["blocks"] if "text" in b]
        assert texts[-1] == "<https://ci.example/jobs/77|Deployment report>"
        if event in ("rollback", "failure"):
            # Slack's mrkdwn needs &, < and > escaped in text that is not markup.
            assert "*Reason*\nError rate 7.5% &gt; 5% &lt;after switch&gt; &amp; rising" in texts
        else:
            assert not any(t.startswith("*Reason*") for t in texts)

        assert set(d) == {"content", "embeds", "allowed_mentions"}
        assert d["content"].startswith("@here ") == (event in MENTIONED)
        assert d["allowed_mentions"] == {"parse": ["everyone"] if event in MENTIONED else []}
        (embed,) = d["embeds"]
        assert {"title", "description", "color", "fields"} <= set(embed)
        assert embed["title"].endswith(" — production: erni-ki 1.1.0")
        assert isinstance(embed["color"], int)
        colours.add(embed["color"])
        assert embed["url"] == "https://ci.example/jobs/77"
        assert embed["timestamp"].endswith("Z")
        names = {f["name"]: f["value"] for f in embed["fields"]}
        assert names["Environment"] == "production" and names["Release"] == "1.1.0"
        assert names["Previous release"] == "1.0.0"
        assert names.get("Reason") == (REASON if event in ("rollback", "failure") else None)
        assert embed["description"] in s["blocks"][0]["text"]["text"].replace("&gt;", ">")
    assert len(colours) == 4

    _, start = received[0]
    assert "Deployment of erni-ki 1.1.0 to production is starting; 1.0.0 serves until the switch." in start["text"]
    _, rollback = received[5]
    assert rollback["embeds"][0]["description"] == "Rolling back production from 1.1.0 to the previous version 1.0.0."
    _, success = received[2]
    assert success["blocks"][0]["text"]["text"].startswith(":white_check_mark: *Deployment succeeded")

    # The task is visible under its checklist name; the URLs are not, anywhere.
    for event in EVENTS:
        assert f"TASK [notify : Notify: {event}]" in run.output
    files = [(report_dir / name).read_text() for name in ("report.json", "report.md", "junit.xml")]
    assert_no_url(chat, run.output, *files)
    report = json.loads(files[0])
    assert report["notifications"]["success"]["slack"]["delivered"] is True
    assert report["notifications"]["success"]["discord"]["status"] == 204
    assert set(report["notifications"]) == set(EVENTS)
    assert "- [x] Team notified of successful deployment: discord, slack" in files[1]


def test_a_chat_outage_is_a_warning_and_the_run_goes_on(tmp_path: Path, chat: Chat) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/services/T0ERNI/B0DEPLOY/{chat.slack_path.rsplit('/', 1)[1]}"
    run, report_dir = notify(tmp_path, notify_test_events=["failure"], slack_webhook_url=nobody,
                             discord_webhook_url=chat.broken_url)
    assert run.rc == 0, run.output[-3000:]
    assert "[WARNING]: Notify: failure: the slack message was not delivered (HTTP -1)" in run.output
    assert "[WARNING]: Notify: failure: the discord message was not delivered (HTTP 500)" in run.output
    assert [path for path, _ in chat.received()] == [chat.broken_path]  # it was tried
    report = json.loads((report_dir / "report.json").read_text())
    assert report["outcome"] == "deployed"
    assert report["notifications"]["failure"]["slack"]["delivered"] is False
    assert report["notifications"]["failure"]["discord"]["status"] == 500
    assert len([w for w in report["warnings"] if "was not delivered" in w["message"]]) == 2
    assert_no_url(chat, run.output, (report_dir / "report.json").read_text(), (report_dir / "report.md").read_text())


def test_notify_fail_on_error_stops_the_run(tmp_path: Path, chat: Chat) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/services/T0ERNI/B0DEPLOY/{chat.slack_path.rsplit('/', 1)[1]}"
    run, report_dir = notify(tmp_path, notify_test_events=["start"], slack_webhook_url=nobody,
                             discord_webhook_url=chat.discord_url, fail_on_error=True)
    assert run.rc == 2, run.output[-3000:]
    assert "Notify: start: not delivered to slack (HTTP -1" in run.output
    assert "discord" not in run.output.split("not delivered to", 1)[1].split("\n", 1)[0]  # discord got it
    assert [path for path, _ in chat.received()] == [chat.discord_path]
    report = json.loads((report_dir / "report.json").read_text())
    assert report["outcome"] == "aborted"
    assert report["failures"][0]["task"] == "Stop when a message was not delivered"
    assert_no_url(chat, run.output, (report_dir / "report.json").read_text())


def test_channels_without_a_url_are_off(tmp_path: Path, chat: Chat) -> None:
    run, _ = notify(tmp_path, notify_test_events=["success"], discord_webhook_url=chat.discord_url)
    assert run.rc == 0, run.output[-3000:]
    assert [path for path, _ in chat.received()] == [chat.discord_path]
    run, _ = notify(tmp_path, notify_test_events=["success"])
    assert run.rc == 0, run.output[-3000:]
    assert len(chat.received()) == 1


def test_check_mode_sends_nothing(tmp_path: Path, chat: Chat) -> None:
    run, report_dir = notify(tmp_path, "--check", notify_test_events=["start"], slack_webhook_url=chat.slack_url,
                             discord_webhook_url=chat.discord_url)
    assert run.rc == 0, run.output[-3000:]
    assert chat.received() == []
    assert_no_url(chat, run.output)
    report = json.loads((report_dir / "report.json").read_text())
    assert report["check_mode"] is True and report["notifications"] == {}


@pytest.mark.parametrize(("extra", "expected"), [
    ({"notify_test_events": ["deployed"]}, "notify_event must be one of: start, success, rollback, failure"),
    ({"notify_test_events": ["start"], "slack_webhook_url": "hooks.slack.com/services/T0/B0/abcdefSECRETpath"},
     "notify_slack_webhook_url must be an http(s) URL"),
])
def test_wrong_inputs_fail_before_anything_is_sent(tmp_path: Path, chat: Chat, extra: dict[str, Any],
                                                   expected: str) -> None:
    run, _ = notify(tmp_path, discord_webhook_url=chat.discord_url, **extra)
    assert run.rc == 2, run.output[-3000:]
    assert expected in run.output
    assert chat.received() == []
    assert "abcdefSECRETpath" not in run.output

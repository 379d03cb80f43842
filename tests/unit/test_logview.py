"""swarm/api/logview.py: Docker's --since syntax, log details and the printed line."""
from __future__ import annotations

import datetime

import pytest

from swarm.api import logview
from swarm.api.logview import BadTime, format_line, get_timestamp, log_details

NOW = 1_700_000_000.75          # 2023-11-14T22:13:20.75Z
PLUS2 = datetime.timezone(datetime.timedelta(hours=2))


@pytest.mark.parametrize("value, expected", [
    ("10m", "2023-11-14T22:03:20.000000000Z"),             # back from now, to the whole second (Docker's)
    ("1h30m", "2023-11-14T20:43:20.000000000Z"),
    ("1.5h", "2023-11-14T20:43:20.000000000Z"),
    ("-1m", "2023-11-14T22:14:20.000000000Z"),             # a negative duration is in the future
    ("2013-01-02T13:23:37Z", "2013-01-02T13:23:37.000000000Z"),
    ("2013-01-02T13:23:37.123456789Z", "2013-01-02T13:23:37.123456789Z"),
    ("2013-01-02T13:23:37.5+01:00", "2013-01-02T12:23:37.500000000Z"),
    ("2013-01-02T13:23:37", "2013-01-02T11:23:37.000000000Z"),   # no zone: the caller's (here +02:00)
    ("2013-01-02T13:23", "2013-01-02T11:23:00.000000000Z"),
    ("2013-01-02T13", "2013-01-02T11:00:00.000000000Z"),
    ("2013-01-02", "2013-01-01T22:00:00.000000000Z"),
    ("1700000000", "2023-11-14T22:13:20.000000000Z"),      # Unix seconds
    ("1700000000.5", "2023-11-14T22:13:20.500000000Z"),
    ("0", "1970-01-01T00:00:00.000000000Z"),               # "0" is a Unix time, not a duration
])
def test_docker_time_syntax(value, expected):
    assert get_timestamp(value, NOW, PLUS2) == expected


@pytest.mark.parametrize("value", ["yesterday", "10 minutes", "2013-13-02", "2013-01-02T25:00:00Z", "", "1m5",
                                   "2013-01-02T13.5"])
def test_bad_times_are_one_sentence(value):
    with pytest.raises(BadTime) as err:
        get_timestamp(value, NOW)
    assert "\n" not in str(err.value) and repr(value) in str(err.value)


def test_check_time_takes_only_the_wire_format():
    assert logview.check_time("since", None) is None
    assert logview.check_time("since", "2013-01-02T13:23:37.000000000Z")
    with pytest.raises(ValueError, match="since must be an RFC 3339"):
        logview.check_time("since", "10m")


def test_details_are_what_the_log_options_name():
    labels = {"com.example.team": "blue", "zone": "a", "other": "x"}
    env = ("REGION=eu", "SECRET=s", "MODE=fast")
    assert log_details(labels, env, {}) == {}                 # Docker: no such option, an empty column
    assert log_details(labels, env, {"labels": "zone,missing", "env": "REGION"}) == {"zone": "a", "REGION": "eu"}
    assert log_details(labels, env, {"labels-regex": "^com\\.", "env-regex": "^MO"}) == \
        {"com.example.team": "blue", "MODE": "fast"}


ENTRY = {"time": "2023-11-14T22:13:20.000000001Z", "line": "hello\n", "task_id": "abcdefghijklmnopqrstuvwxy",
         "service": "web", "service_id": "svc123", "slot": 3, "node": "n1", "node_id": "node123",
         "details": {"zone": "a b", "REGION": "eu"}}


def test_the_line_as_docker_prints_it():
    assert format_line(ENTRY) == "web.3.abcdefghijkl@n1    | hello"
    assert format_line(ENTRY, width=2) == "web.3.abcdefghijkl@n1     | hello"      # padded to 10+ replicas
    assert format_line(ENTRY, task_ids=False) == "web.3@n1    | hello"
    assert format_line(ENTRY, trunc=False) == "web.3.abcdefghijklmnopqrstuvwxy@n1    | hello"
    assert format_line(ENTRY, resolve=False) == "svc123.3.abcdefghijkl@node123    | hello"
    assert format_line(ENTRY, timestamps=True) == "2023-11-14T22:13:20.000000001Z web.3.abcdefghijkl@n1    | hello"
    assert format_line(ENTRY, details=True) == "web.3.abcdefghijkl@n1    | REGION=eu,zone=a+b hello"
    assert format_line(dict(ENTRY, details={}), details=True) == "web.3.abcdefghijkl@n1    |  hello"
    assert format_line(ENTRY, raw=True) == "hello"
    assert format_line(ENTRY, raw=True, timestamps=True) == "2023-11-14T22:13:20.000000001Z hello"
    assert format_line(ENTRY, raw=True, details=True) == (
        "REGION=eu,com.docker.swarm.node.id=node123,com.docker.swarm.service.id=svc123,"
        "com.docker.swarm.task.id=abcdefghijklmnopqrstuvwxy,zone=a+b hello")

"""The one reference resolver (Docker's rules): full ID, then exact name, then
a unique ID prefix; a name or a prefix that matches several is an error,
never the first match."""
import pytest

from swarm.api import model
from swarm.api.errors import ApiError
from swarm.api.refs import resolve_ref

ITEMS = {
    "abc123": {"name": "web"},
    "abd456": {"name": "db"},
    "xyz789": {"name": "abc123x"},
    "web000": {"name": "cache"},
}


def resolve(ref, items=ITEMS):
    return resolve_ref("service", items, ref, lambda item: item["name"])


@pytest.mark.parametrize("ref, name", [
    ("abc123", "web"),        # full ID
    ("web", "web"),           # exact name, before the ID prefix "web" of web000
    ("db", "db"),
    ("abd", "db"),            # unique ID prefix
    ("x", "abc123x"),
    ("abc123x", "abc123x"),   # a name, even though an ID is its prefix
])
def test_id_then_name_then_unique_prefix(ref, name):
    assert resolve(ref)["name"] == name


def test_a_full_id_wins_over_a_name_equal_to_it():
    items = dict(ITEMS, other={"name": "abc123"})
    assert resolve("abc123", items)["name"] == "web"


def test_a_shared_name_is_ambiguous_never_the_first_match():
    items = dict(ITEMS, twin00={"name": "web"})
    with pytest.raises(ApiError) as err:
        resolve("web", items)
    assert err.value.code == "bad_request"
    assert err.value.message == "service web is ambiguous (2 services are named web): use an ID"
    assert resolve("twin00", items)["name"] == "web"


def test_a_shared_prefix_is_ambiguous():
    with pytest.raises(ApiError) as err:
        resolve("ab")
    assert err.value.code == "bad_request"
    assert err.value.message == "service ab is ambiguous (2 IDs start with it): give more characters"


@pytest.mark.parametrize("ref", ["", "nope", "abc1234", "WEB"])
def test_nothing_else_matches(ref):
    with pytest.raises(ApiError) as err:
        resolve(ref)
    assert (err.value.code, err.value.message) == ("not_found", f"service {ref} not found")


def test_nodes_resolve_by_hostname():
    nodes = {"n1aaaa": {"id": "n1aaaa", "hostname": "alpha"}, "n2bbbb": {"id": "n2bbbb", "hostname": "beta"}}
    assert model.resolve(nodes, "beta")["id"] == "n2bbbb"
    assert model.resolve(nodes, "n1")["id"] == "n1aaaa"
    nodes["n3cccc"] = {"id": "n3cccc", "hostname": "beta"}
    with pytest.raises(ApiError, match="node beta is ambiguous"):
        model.resolve(nodes, "beta")
    with pytest.raises(ApiError, match="not_found: node gamma not found"):
        model.resolve(nodes, "gamma")

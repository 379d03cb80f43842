"""swarm/stack: reading compose files (YAML with lines), interpolation, the compose-spec
schema, the long forms and merging — every bad input one sentence naming the file, line and key."""
from __future__ import annotations

import pytest

from swarm.stack import loader, merge
from swarm.stack.errors import ComposeError
from swarm.stack.interpolate import TemplateError, substitute
from swarm.stack.loader import Source, load_sources

ENV = {"NAME": "web", "EMPTY": "", "REPLICAS": "3"}


def load(*texts: str, environ=None, names=None, env_files=None):
    names = names or [f"f{i}.yml" for i in range(len(texts))]
    sources = [Source(n, t) for n, t in zip(names, texts)]
    return load_sources(sources, ENV if environ is None else environ, "/srv/app",
                        (env_files or {}).__getitem__ if env_files is not None else None)


def error(*texts: str, **kwargs) -> str:
    with pytest.raises(ComposeError) as caught:
        load(*texts, **kwargs)
    return caught.value.message


# -- interpolation (docker/cli's template_test.go cases) ----------------------------------------

def lookup(name):
    return ENV.get(name)


@pytest.mark.parametrize("text,expected", [
    ("${NAME}", "web"), ("$NAME", "web"), ("x-${NAME}-y", "x-web-y"), ("$$NAME", "$NAME"),
    ("${MISSING}", ""), ("${MISSING:-def}", "def"), ("${EMPTY:-def}", "def"), ("${EMPTY-def}", ""),
    ("${MISSING-def}", "def"), ("${NAME:-def}", "web"), ("${NAME:?err}", "web"), ("${EMPTY?err}", ""),
    ("no variables", "no variables"), ("${MISSING:-a b c}", "a b c"), ("$$", "$"),
])
def test_substitute_as_docker(text, expected):
    assert substitute(text, lookup) == expected


@pytest.mark.parametrize("text,message", [
    ("${MISSING:?please set it}", "required variable MISSING is missing a value: please set it"),
    ("${EMPTY:?}", "required variable EMPTY is missing a value"),
    ("${MISSING?}", "required variable MISSING is missing a value"),
    ("${}", "invalid interpolation format"), ("$", "invalid interpolation format"),
    ("${ NAME}", "invalid interpolation format"),
])
def test_substitute_refuses(text, message):
    with pytest.raises(TemplateError, match=message.replace("$", r"\$")):
        substitute(text, lookup)


def test_interpolated_numbers_and_booleans_are_cast_where_docker_casts():
    c = load("services:\n  web:\n    image: demo\n    read_only: ${RO}\n    deploy:\n      replicas: ${REPLICAS}\n"
             "    environment:\n      COUNT: ${REPLICAS}\n", environ={**ENV, "RO": "yes"})
    web = c.data["services"]["web"]
    assert web["deploy"]["replicas"] == 3 and web["read_only"] is True
    assert web["environment"] == {"COUNT": "3"}       # not a cast path: stays text


def test_missing_required_variable_names_file_line_and_key():
    text = "services:\n  web:\n    image: demo\n    environment:\n      PASSWORD: ${DB_PASSWORD:?set the password}\n"
    assert error(text, names=["stack.yml"]) == (
        "stack.yml, line 5: services.web.environment.PASSWORD cannot be interpolated: required variable "
        "DB_PASSWORD is missing a value: set the password")


def test_bad_template_names_file_line_and_key():
    text = "services:\n  web:\n    image: demo\n    command: echo ${oops\n"
    message = error(text, names=["stack.yml"])
    assert message.startswith("stack.yml, line 4: services.web.command cannot be interpolated: invalid "
                              "interpolation format")
    assert "escape any $ with another $" in message


def test_a_cast_that_fails_is_one_sentence():
    text = "services:\n  web:\n    image: demo\n    deploy:\n      replicas: ${NAME}\n"
    assert error(text) == "f0.yml, line 5: services.web.deploy.replicas is 'web' after interpolation, which is " \
                          "not an integer"


def test_dotenv_beside_the_first_file(tmp_path):
    (tmp_path / ".env").write_text("# comment\nTAG=1.2\nexport REPLICAS=4\nQUOTED=\"a b\"\nNAME=from-dotenv\n")
    (tmp_path / "stack.yml").write_text("services:\n  web:\n    image: demo:${TAG}\n    hostname: ${QUOTED}-${NAME}\n"
                                        "    deploy:\n      replicas: ${REPLICAS}\n")
    c = loader.load([str(tmp_path / "stack.yml")], {"NAME": "from-env"})
    web = c.data["services"]["web"]
    assert web["image"] == "demo:1.2" and web["deploy"]["replicas"] == 4
    assert web["hostname"] == "a b-from-env"    # the environment wins over .env


# -- YAML ---------------------------------------------------------------------------------------

def test_yaml_12_scalars_as_docker_reads_them():
    c = load("services:\n  web:\n    image: demo\n    ports:\n      - 80:80\n    environment:\n      A: yes\n"
             "      B: 2001-12-14\n      C: true\n")
    web = c.data["services"]["web"]
    assert web["ports"][0]["published"] == 80 and web["ports"][0]["target"] == 80   # not 4880 (base 60)
    assert web["environment"] == {"A": "yes", "B": "2001-12-14", "C": "true"}


def test_anchors_and_merge_keys():
    c = load("x-defaults: &d\n  image: demo\n  environment: {A: '1'}\nservices:\n  web:\n    <<: *d\n"
             "    hostname: h\n")
    assert c.data["services"]["web"]["image"] == "demo" and c.data["services"]["web"]["environment"] == {"A": "1"}


def test_yaml_syntax_error_names_the_line():
    message = error("services:\n  web:\n    image: [demo\n", names=["stack.yml"])
    assert message.startswith("stack.yml, line ") and "not valid YAML" in message


def test_top_level_must_be_a_mapping():
    assert "top-level object must be a mapping" in error("- a\n- b\n")


# -- schema -------------------------------------------------------------------------------------

def test_no_services_fails():
    assert error("version: '3.8'\n", names=["stack.yml"]).startswith("stack.yml: the compose file has no services")
    assert "has no services" in error("services: {}\n")


def test_unknown_top_level_key_names_file_line_and_key():
    message = error("services:\n  web:\n    image: demo\nservice:\n  x: 1\n", names=["stack.yml"])
    assert message.startswith("stack.yml, line 4: service is not a top-level key of a compose file")


def test_unknown_service_key_is_named_at_its_line():
    assert error("services:\n  web:\n    image: demo\n    imagee: x\n", names=["s.yml"]) == \
        "s.yml, line 4: services.web.imagee is not a key of this section"


def test_a_wrong_type_names_the_key():
    message = error("services:\n  web:\n    image: demo\n    deploy:\n      mode: 5\n", names=["s.yml"])
    assert message == "s.yml, line 5: services.web.deploy.mode must be a string, not 5"


def test_bad_port_fails_with_file_line_and_key():
    message = error("services:\n  web:\n    image: demo\n    ports:\n      - '80:80:80:80'\n", names=["s.yml"])
    assert message.startswith("s.yml, line 5: services.web.ports[0] ")
    message = error("services:\n  web:\n    image: demo\n    ports:\n      - 99999:80\n", names=["s.yml"])
    assert message.startswith("s.yml, line 5: services.web.ports[0] has an invalid published port '99999'")


# -- long forms (docker/cli's loader transforms) ---------------------------------------------------

@pytest.mark.parametrize("item,expected", [
    (8080, [{"target": 8080, "published": 0, "protocol": "tcp", "mode": "ingress"}]),
    ("8080:80/udp", [{"target": 80, "published": 8080, "protocol": "udp", "mode": "ingress"}]),
    ("127.0.0.1:8080:80", [{"target": 80, "published": 8080, "protocol": "tcp", "mode": "ingress"}]),
    ("9090-9091:8080-8081", [{"target": 8080, "published": 9090, "protocol": "tcp", "mode": "ingress"},
                             {"target": 8081, "published": 9091, "protocol": "tcp", "mode": "ingress"}]),
    ({"target": 80, "published": "8080", "mode": "host"},
     [{"target": 80, "published": 8080, "protocol": "tcp", "mode": "host"}]),
])
def test_ports(item, expected):
    assert merge.parse_port(item) == expected


@pytest.mark.parametrize("item,expected", [
    ("/data", {"type": "volume", "target": "/data"}),
    ("db:/var/lib/db:ro", {"type": "volume", "source": "db", "target": "/var/lib/db", "read_only": True}),
    ("./conf:/etc/app:rshared", {"type": "bind", "source": "/srv/app/conf", "target": "/etc/app",
                                 "bind": {"propagation": "rshared"}}),
    ("db:/d:nocopy", {"type": "volume", "source": "db", "target": "/d", "volume": {"nocopy": True}}),
])
def test_volumes(item, expected):
    assert merge.parse_volume(item, "/srv/app", {}) == expected


def test_short_forms_become_long_ones():
    c = load("services:\n  web:\n    image: demo\n    command: sh -c 'echo hi'\n    environment: [A=1, B]\n"
             "    labels: [x=y]\n    networks: [front]\n    secrets: [pw]\n    extra_hosts: {db: 10.0.0.2}\n"
             "    healthcheck:\n      test: curl -f localhost\n    dns: 8.8.8.8\n"
             "networks:\n  front:\nsecrets:\n  pw:\n    file: pw.txt\n", environ={"B": "from-env"})
    web = c.data["services"]["web"]
    assert web["command"] == ["sh", "-c", "echo hi"]
    assert web["environment"] == {"A": "1", "B": "from-env"}
    assert web["labels"] == {"x": "y"} and web["networks"] == {"front": None}
    assert web["secrets"] == [{"source": "pw"}] and web["extra_hosts"] == ["db:10.0.0.2"]
    assert web["healthcheck"]["test"] == ["CMD-SHELL", "curl -f localhost"] and web["dns"] == ["8.8.8.8"]
    assert c.data["secrets"]["pw"]["file"] == "/srv/app/pw.txt"


def test_env_file_then_environment():
    c = load("services:\n  web:\n    image: demo\n    env_file: web.env\n    environment:\n      B: override\n",
             env_files={"/srv/app/web.env": "# c\nA=1\nB=2\nC\n"}, environ={"C": "from-env"})
    assert c.data["services"]["web"]["environment"] == {"A": "1", "B": "override", "C": "from-env"}


# -- merging several files (docker/cli's merge_test.go) -----------------------------------------

def test_merge_of_two_files():
    base = ("services:\n  web:\n    image: demo:1\n    environment: {A: '1', B: '1'}\n    ports: ['8080:80']\n"
            "    command: a b\n    cap_add: [NET_ADMIN]\n    secrets: [s1]\n    deploy:\n      replicas: 2\n"
            "      labels: {x: '1'}\n  db:\n    image: db\nsecrets:\n  s1:\n    file: a\n")
    override = ("services:\n  web:\n    image: demo:2\n    environment: {B: '2'}\n    ports:\n"
                "      - target: 81\n        published: 8080\n      - '9090:90'\n    cap_add: [SYS_TIME]\n"
                "    secrets: [{source: s1, target: t}]\n    deploy:\n      labels: {y: '2'}\n  cache:\n"
                "    image: redis\n")
    c = load(base, override)
    web = c.data["services"]["web"]
    assert web["image"] == "demo:2" and web["environment"] == {"A": "1", "B": "2"}
    assert [(p["published"], p["target"]) for p in web["ports"]] == [(8080, 81), (9090, 90)]
    assert web["command"] == ["a", "b"] and web["cap_add"] == ["NET_ADMIN", "SYS_TIME"]
    assert web["secrets"] == [{"source": "s1", "target": "t"}]
    assert web["deploy"] == {"replicas": 2, "labels": {"x": "1", "y": "2"}}
    assert sorted(c.data["services"]) == ["cache", "db", "web"]


def test_an_error_in_the_second_file_names_that_file():
    message = error("services:\n  web:\n    image: demo\n", "services:\n  web:\n    bogus: 1\n",
                    names=["base.yml", "prod.yml"])
    assert message == "prod.yml, line 3: services.web.bogus is not a key of this section"

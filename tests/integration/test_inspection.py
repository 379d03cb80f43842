"""Inspection through real daemons (a manager and a worker) and the real CLI: list
filters (checked and applied by the manager), `node ps`, --format Go templates and
`service inspect --pretty`, on services running real runc containers."""
import pytest

from swarm.lab.localcluster import eventually


@pytest.fixture
def cluster(swarm, demo_tar):
    m1 = swarm.init("m1")
    w1 = swarm.join("w1", m1, "worker")
    for node in (m1, w1):
        swarm.run(node, "image", "import", demo_tar, "demo:1")
    eventually(lambda: all(r["status"] == "ready" for r in swarm.ls(m1).values()), 10, "nodes ready")
    swarm.run(m1, "service", "create", "--name", "web", "--replicas", "2", "--label", "env=prod", "--detach",
              "demo:1", "sleep", "1000")
    swarm.run(m1, "service", "create", "--name", "agent", "--mode", "global", "--detach", "demo:1", "sleep", "1000")

    def all_running() -> bool:
        tasks = swarm.json(m1, "service", "ps", "web", "agent")
        return len(tasks) == 4 and all(t["current_state"].startswith("running") for t in tasks)

    eventually(all_running, 60, "web's 2 tasks and agent's 2 running")
    try:
        yield swarm, m1, w1
    finally:
        swarm.stop_all()
        swarm.stop_containers()


def out(swarm, node, *args) -> str:
    return swarm.run(node, *args).stdout


def test_list_filters_are_applied_by_the_manager(cluster):
    swarm, m1, w1 = cluster
    names = lambda *args: [r["name"] for r in swarm.json(m1, "service", "ls", *args)]  # noqa: E731
    assert names("-f", "label=env=prod") == ["web"]
    assert names("-f", "mode=global") == ["agent"]
    assert names("-f", "name=we", "-f", "name=ag") == ["agent", "web"]        # one key: any value
    assert names("-f", "name=web", "-f", "mode=global") == []                 # two keys: both
    assert [r["hostname"] for r in swarm.json(m1, "node", "ls", "-f", "role=worker")] == ["w1"]
    assert [r["name"] for r in swarm.json(m1, "network", "ls", "-f", "name=ingr")] == ["ingress"]
    running_on_w1 = swarm.json(m1, "service", "ps", "agent", "web", "-f", "node=w1", "-f", "desired-state=running")
    assert {t["node"] for t in running_on_w1} == {"w1"} and {t["name"].split(".")[0] for t in running_on_w1} >= {
        "agent"}
    bad = swarm.run(m1, "service", "ls", "-f", "colour=red", check=False)
    assert (bad.returncode, bad.stderr, bad.stdout) == (1, "Error: invalid filter 'colour'\n", "")
    bad = swarm.run(m1, "node", "ls", "-f", "role=boss", check=False)
    assert (bad.returncode, bad.stderr) == (1, "Error: Invalid role filter: 'boss'\n")


def test_node_ps_lists_the_tasks_of_a_node(cluster):
    swarm, m1, w1 = cluster
    mine = out(swarm, m1, "node", "ps", "--format", "{{.Node}} {{.DesiredState}}").splitlines()
    assert mine and set(mine) == {"m1 Running"}
    assert set(out(swarm, m1, "node", "ps", "w1", "--format", "{{.Node}}").split()) == {"w1"}
    both = out(swarm, m1, "node", "ps", "m1", "w1", "-q").split()
    assert len(both) == 4 and len(set(both)) == 4
    table = out(swarm, m1, "node", "ps", "-f", "name=agent").splitlines()
    assert table[0].split()[:3] == ["ID", "NAME", "IMAGE"] and len(table) == 2 and " agent." in table[1]
    # a worker holds no tasks of others to show: docker's sentence
    refused = swarm.run(w1, "node", "ps", check=False)
    assert refused.returncode == 1 and "This node is not a swarm manager." in refused.stderr


def test_format_templates(cluster):
    swarm, m1, w1 = cluster
    assert out(swarm, m1, "service", "ls", "--format", "table {{.Name}}\t{{.Mode}}\t{{.Replicas}}") == (
        "NAME      MODE         REPLICAS\n"
        "agent     global       2/2\n"
        "web       replicated   2/2\n"
    )
    assert out(swarm, m1, "node", "ls", "--format", "{{.Hostname}}{{if .Self}} *{{end}}") == "m1 *\nw1\n"
    assert out(swarm, m1, "service", "ps", "web", "--format", "{{.Name}}") == "web.1\nweb.2\n"
    assert out(swarm, m1, "service", "inspect", "--format", "{{.Spec.Name}} {{index .spec.labels \"env\"}}",
               "web") == "web prod\n"
    assert out(swarm, m1, "network", "inspect", "-f", "{{.name}} {{.ingress}}", "ingress") == "ingress true\n"
    bad = swarm.run(m1, "service", "ls", "--format", "{{.Replicaz}}", check=False)
    assert (bad.returncode, bad.stderr) == (1, "Error: template parsing error: unknown field .Replicaz\n")


def test_inspect_pretty(cluster):
    swarm, m1, w1 = cluster
    text = out(swarm, m1, "service", "inspect", "--pretty", "web")
    assert text.startswith("ID:    ") and "\nName:                 web\n" in text
    assert "\nLabels:\n env=prod\n" in text
    assert "\nService Mode:         Replicated\n Replicas:            2\n" in text
    assert "\nContainerSpec:\n Image:               demo:1\n Args:                sleep 1000\n" in text
    assert out(swarm, m1, "service", "inspect", "--pretty", "agent").count("Service Mode:         Global\n") == 1
    assert out(swarm, m1, "node", "inspect", "--pretty", "w1").startswith("ID:")

"""What a user sees while the CLI waits for a service, on one real node (a
real daemon and runc containers, through the real CLI): the reason a task
cannot start, shown once, and `service scale` waiting like create/update."""

import pytest

from swarm.lab.localcluster import Swarm, eventually


@pytest.fixture
def node(tmp_path, demo_tar):
    swarm = Swarm(str(tmp_path))
    try:
        m1 = swarm.init("m1")
        swarm.run(m1, "image", "import", demo_tar, "demo:1")
        # The manager learns a node's images from its heartbeats: until then it refuses the image.
        eventually(lambda: swarm.run(m1, "service", "create", "--detach", "--name", "probe", "demo:1",
                                     check=False).returncode == 0, 10, "the manager to know the image")
        swarm.run(m1, "service", "rm", "probe")
        yield swarm, m1
    finally:
        swarm.stop_all()
        swarm.stop_containers()


def test_a_command_that_fails_at_once_is_named_once_and_ends_the_wait(node):
    swarm, m1 = node
    proc = swarm.run(m1, "service", "create", "--name", "typo", "--restart-delay", "200ms", "--timeout", "4s",
                     "demo:1", "no-such-command", check=False)
    assert proc.returncode == 1
    reasons = [line for line in proc.stdout.splitlines() if "no-such-command" in line]
    assert len(reasons) == 1 and reasons[0].startswith("1/1: ")  # several attempts failed, one line
    assert "waiting up to 4s (--timeout); Ctrl-C stops waiting, not the service" in proc.stdout.splitlines()
    # demo:1 is imported, not in a registry: Docker's warning first, then the one error line
    warning, error = proc.stderr.splitlines()
    assert warning.startswith("image demo:1 could not be accessed on a registry to record its digest.")
    assert error.startswith("Error: service typo did not converge in 4s: ") and "no-such-command" in error
    attempts = [t for t in swarm.json(m1, "service", "ps", "typo") if t["state"] in ("failed", "rejected")]
    assert len(attempts) > 1


def test_scale_waits_until_the_service_converged(node):
    swarm, m1 = node
    swarm.run(m1, "service", "create", "--name", "web", "--detach", "demo:1", "sleep", "1000")
    out = swarm.run(m1, "service", "scale", "web=3", timeout=90).stdout
    assert out.startswith("web scaled to 3\n") and out.endswith("verify: Service converged\n")
    assert [r["replicas"] for r in swarm.json(m1, "service", "ls")] == ["3/3"]  # no waiting needed here
    out = swarm.run(m1, "service", "scale", "web=1", timeout=90).stdout
    assert out.endswith("overall progress: 1 out of 1 tasks\n1/1: running   [" + "=" * 50 + ">]\n"
                        "verify: Service converged\n")
    assert [r["replicas"] for r in swarm.json(m1, "service", "ls")] == ["1/1"]
    assert swarm.run(m1, "service", "scale", "-d", "web=2").stdout == "web scaled to 2\n"

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pytest  # noqa: E402


@pytest.hookimpl(tryfirst=True)   # before pytest-xdist's own hook reads the groups into the test ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`-n 2 --dist loadgroup`, as .ci/run runs the suite), a test file
    runs whole on one worker (its fixtures are built once), and every file that builds
    network namespaces (labs, chaos, netns datapath tests) carries
    `pytest.mark.xdist_group("netns")`: those run one after another on one worker, because
    they check what the machine's namespaces and links hold. Loopback clusters take their
    addresses from a range of their own per worker (swarm/lab/localcluster.py)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))

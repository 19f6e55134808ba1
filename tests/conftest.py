"""Shared test settings.

``make test`` runs the suite on parallel workers (pytest-xdist, ``--dist loadgroup``),
one torch thread each. Tests that share a module-scoped fixture (a fitted model, a
folder of PNGs, a Dask cluster) are put in one ``xdist_group`` here, so that the
fixture is built once, on one worker; every other test is scheduled on its own.
"""

import os

import matplotlib
import pytest
import torch

# Figures are rendered to files in tests; never open a window.
matplotlib.use("Agg")

#: Fixture scopes whose value is shared by several tests of one module.
_SHARED_SCOPES = ("module", "class", "package")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models train faster on one thread than on two contending ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _shared_fixtures(item):
    """The names of the module-, class- or package-scoped fixtures ``item`` uses."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return set()
    return {name for name, defs in info.name2fixturedefs.items()
            if defs and defs[-1].scope in _SHARED_SCOPES}


def _fixture_groups(items):
    """Each item that uses a shared fixture -> the name of its group.

    Within a module, tests are joined when they use a shared fixture in common
    (directly or through another fixture: the closure counts), so two unrelated
    fixtures of one module can still run on two workers. A test that takes
    ``request`` may ask for any of its module's fixtures by name
    (``request.getfixturevalue``), so it joins all of them.
    """
    parent = {}

    def find(key):
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    used, in_module = {}, {}
    for item in items:
        module = item.nodeid.split("::")[0]
        used[item] = sorted((module, name) for name in _shared_fixtures(item))
        in_module.setdefault(module, set()).update(used[item])
    groups = {}
    for item, keys in used.items():
        if "request" in getattr(getattr(item, "_fixtureinfo", None), "argnames", ()):
            keys = sorted(in_module[item.nodeid.split("::")[0]])
        if not keys:
            continue
        for key in keys[1:]:
            parent[find(key)] = find(keys[0])
        groups[item] = keys[0]
    return {item: "{}::{}".format(*find(key)) for item, key in groups.items()}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup``, keep the users of a shared fixture on one worker.

    pytest-xdist hands out the groups with the most tests first, then single
    tests in collection order; the tests marked ``slow`` go first among them,
    so that no worker starts a long test while the other has nothing left.
    """
    if not getattr(config.option, "loadgroup", False):  # set on xdist's workers
        return
    for item, group in _fixture_groups(items).items():
        item.add_marker(pytest.mark.xdist_group(group))
        _suffix_group(item, group)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable


def _suffix_group(item, group):
    """Append ``@group`` to the item's nodeid: how the scheduler sees a group.

    pytest-xdist (3.8) does this by setting ``item._nodeid``, which pytest 9.2
    no longer reads (``nodeid`` is ``str(item._id)``): without this, every test
    is scheduled on its own and a module's fixture is built on both workers.
    """
    node_id = getattr(item, "_id", None)
    if node_id is not None and not item.nodeid.endswith("@" + group):
        item._id = type(node_id).parse(f"{item.nodeid}@{group}")


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook; without it, unused
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per CPU core this process may run on (its affinity).

    pytest-xdist counts the machine's physical cores, which a container or a
    ``taskset`` may not grant. ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still wins.
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's own hook reads it
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1

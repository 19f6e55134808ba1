"""``make test`` on two pytest-xdist workers: a module's shared fixture is built once.

A small test folder with this suite's ``conftest.py`` runs in a subprocess
with ``-n 2 --dist loadgroup``: three tests share a module-scoped fixture
that records the process building it, and the worker that is not busy with
them has other tests to run.
"""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("xdist", reason="make test runs on pytest-xdist (the dev extra)")

TESTS = textwrap.dedent(
    """
    import os, time
    import pytest

    @pytest.fixture(scope="module")
    def fitted():
        with open(os.environ["BUILDS"], "a") as f:
            f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
        return 1

    def test_a(fitted):
        time.sleep(0.2)

    @pytest.mark.parametrize("i", range(8))
    def test_free(i):
        time.sleep(0.05)

    def test_b(fitted):
        time.sleep(0.2)

    def test_c(fitted):
        time.sleep(0.2)
    """
)


@pytest.mark.slow  # two workers importing torch
def test_users_of_a_module_fixture_share_one_worker(tmp_path):
    (tmp_path / "tests").mkdir()
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "tests" / "conftest.py")
    (tmp_path / "tests" / "test_shared.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: longer tests\n")
    builds = tmp_path / "builds.txt"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2",
         "--dist", "loadgroup", "-v", "tests"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "BUILDS": str(builds), "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "11 passed" in result.stdout
    assert len(builds.read_text().split()) == 1, (builds.read_text(), result.stdout[-3000:])
    # The three users ran under one group id, on one worker.
    lines = [line for line in result.stdout.splitlines() if "PASSED" in line and "::test_" in line]
    users = [line for line in lines if "@tests/test_shared.py::fitted" in line]
    assert len(users) == 3 and len({line.split("]")[0] for line in users}) == 1, lines

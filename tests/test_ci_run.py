""".ci/run installs Chromium on CI when it is missing, then runs ``make test``.

Run with stand-ins for ``apt-get``, ``make`` and ``id`` on a PATH that holds
nothing else, so nothing is installed and no test suite runs.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CI_RUN = Path(__file__).resolve().parents[1] / ".ci" / "run"


def _stub(path, body):
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path):
    """A PATH with stand-ins: apt-get "installs" a chromium stub, make logs what it sees."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    for tool in ("dirname", "env", "chmod"):  # .ci/run and the stand-ins need
        os.symlink(shutil.which(tool), bin_dir / tool)
    _stub(bin_dir / "id", "echo 0")  # root: no sudo needed
    _stub(bin_dir / "apt-get", f"""echo "apt-get $*" >> {log}
[ -n "$APT_FAILS" ] && exit 100
case " $* " in *" install "*) printf '#!/bin/sh\\n' > {bin_dir}/chromium; chmod +x {bin_dir}/chromium;; esac
exit 0""")
    _stub(bin_dir / "make", f"""echo "make $*" >> {log}
command -v chromium >/dev/null && echo "make sees chromium" >> {log}
exit 0""")

    def run(ci="true", chromium=False, apt_fails=False):
        log.unlink(missing_ok=True)
        if chromium:
            _stub(bin_dir / "chromium", "exit 0")
        env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "SKXRAY_DATA": str(tmp_path)}
        env.update({"CI": ci} if ci else {})
        env.update({"APT_FAILS": "1"} if apt_fails else {})
        result = subprocess.run([shutil.which("bash"), str(CI_RUN)], env=env, capture_output=True,
                                text=True, timeout=60)
        lines = log.read_text().splitlines() if log.exists() else []
        return result, lines

    return run


def test_ci_installs_a_missing_chromium_before_the_tests(machine):
    result, log = machine()
    assert result.returncode == 0, result.stderr
    assert log[0] == "apt-get update -qq"
    assert log[1].startswith("apt-get install") and log[1].endswith(" chromium")
    assert log[2:] == ["make test", "make sees chromium"]


def test_nothing_is_installed_outside_ci_or_when_chromium_is_there(machine):
    assert machine(ci=None)[1] == ["make test"]
    assert machine(chromium=True)[1] == ["make test", "make sees chromium"]


def test_a_failed_install_says_so_and_still_runs_the_tests(machine):
    result, log = machine(apt_fails=True)
    assert log == ["apt-get update -qq", "make test"]  # the browser test then fails (CI=true)
    assert "Chromium is missing" in result.stderr

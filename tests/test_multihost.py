"""Across machines: pytest-xdist's ssh transport to a second checkout, for real.

A throwaway sshd on 127.0.0.1 (its own host key, a throwaway client key, a free port) plays
the remote host; the project is copied into another folder there. Skipped, with the reason,
where sshd or ssh-keygen is not installed (.ci/run installs openssh-server, so CI runs it).
"""

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_plugin import not_an_xdist_worker  # noqa: F401 - autouse fixture

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
SSH_KEYGEN = shutil.which("ssh-keygen")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """An sshd on 127.0.0.1 for this user, with throwaway keys; yields the ssh config file
    to use (host alias 'vghost')."""
    if SSHD is None or SSH_KEYGEN is None or shutil.which("ssh") is None:
        pytest.skip("sshd, ssh or ssh-keygen is not installed (Debian: apt-get install "
                    "openssh-server openssh-client; .ci/run installs them)")
    d = tmp_path_factory.mktemp("sshd")
    os.chmod(d, 0o700)
    for name in ("host_key", "client_key"):
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation folder
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    config = d / "ssh_config"
    config.write_text(
        f"Host vghost\n  HostName 127.0.0.1\n  Port {port}\n  User {getpass.getuser()}\n"
        f"  IdentityFile {d / 'client_key'}\n  IdentitiesOnly yes\n  BatchMode yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    deadline = time.monotonic() + 10
    while True:
        probe = subprocess.run(["ssh", "-F", str(config), "vghost", "true"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"sshd did not come up: {proc.stdout.read()} {probe.stderr}")
        time.sleep(0.2)
    yield config
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def remote_checkout(tmp_path):
    """The project as another host would have it: its own folder (its own checkout)."""
    dest = tmp_path / "remote" / "vgbench"
    dest.mkdir(parents=True)
    for name in ("benchmarks", "vgbench", "examples"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copy(ROOT / name, dest / name)
    return dest


def test_the_suite_runs_over_ssh_and_the_results_come_home(sshd, remote_checkout, tmp_path,
                                                           real_data):
    """The recipe of docs/multihost.md: two workers on the 'remote' host, a tiny budget. The controller
    runs in a folder of its own (no shared filesystem with the remote checkout) and ends up
    with the summary and every case's history and figures; the remote worker pinned to one
    core sets its torch threads from that host's cores."""
    home = tmp_path / "controller"
    shutil.copytree(remote_checkout, home / "vgbench")  # the controller's own checkout
    python = f"taskset -c 0 {sys.executable}" if shutil.which("taskset") else sys.executable
    tx = f"2*ssh=-F {sshd} vghost//python={python}//chdir={remote_checkout}"
    cmd = [sys.executable, "-m", "pytest", "-d", "--tx", tx, "-o", "testpaths=benchmarks",
           "-p", "no:cacheprovider", "--vg-budget", "quick", "--vg-epochs", "1",
           "--vg-limit", "512", "--vg-remedy", "baseline", "--vg-seeds", "2",
           "--vg-out=vg-out"]
    res = subprocess.run(cmd, cwd=home / "vgbench", capture_output=True, text=True,
                         timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "2 passed" in out and "vgbench summary" in out
    local = home / "vgbench" / "vg-out"
    summary = json.loads((local / "summary.json").read_text())
    assert summary["complete"] and summary["rows"][0]["seeds"] == [42, 43]
    for seed in (42, 43):
        case = local / f"baseline-seed{seed}"
        h = json.loads((case / "history.json").read_text())
        assert len(h["val_acc"]) == 1 and h["env"]["threads"] == 1
        for png in ("learning_curves.png", "gradient_flow.png", "weight_change.png"):
            assert (case / png).stat().st_size > 1000
        # the remote host kept its own copy, identical
        remote = remote_checkout / "vg-out" / f"baseline-seed{seed}" / "history.json"
        assert remote.read_text() == (case / "history.json").read_text()
    assert "deprecated" not in out.lower()


def test_workers_per_host_from_tx_specs(pytester):
    """Each host's workers are counted from -n / --tx, so that each sets its threads from
    its own cores."""
    pytester.makeconftest(
        "from vgbench import plugin\n"
        "def pytest_configure(config):\n"
        "    print('HOSTS', sorted(plugin._host_workers(config).items()))\n")
    res = pytester.runpytest_subprocess("--tx", "2*ssh=alpha//python=python", "--tx", "popen",
                                        "--tx", "3*ssh=-p 2222 beta", "--collect-only",
                                        "-p", "no:cacheprovider", "-s")
    assert "HOSTS [('-p 2222 beta', 3), ('alpha', 2), ('local', 1)]" in res.stdout.str()


def test_a_local_path_with_remote_workers_is_a_usage_error(pytester):
    """xdist would stop with an INTERNALERROR ('not relative to an rsync root')."""
    shutil.copytree(ROOT / "benchmarks", pytester.path / "benchmarks")
    shutil.copy(ROOT / "conftest.py", pytester.path / "conftest.py")
    res = pytester.runpytest_subprocess("benchmarks", "-d", "--tx", "ssh=nowhere.invalid",
                                        "-p", "no:cacheprovider")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "name the tests with -o testpaths=benchmarks" in res.stderr.str()
    assert "INTERNALERROR" not in res.stdout.str() + res.stderr.str()

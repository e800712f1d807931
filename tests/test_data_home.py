"""The suite runs against a data home of its own (the repository's conftest.py), never the user's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dmesr.data.own import save_registration
from dmesr.paths import dmesr_home, write_atomically

REPOSITORY = Path(__file__).resolve().parents[1]


def test_a_test_writes_into_the_suites_data_home():
    """Run alone by the test below, inside a session whose user has a data home of their own."""
    assert Path(os.environ["DMESR_HOME"]).name.startswith("dmesr-test-home-")
    write_atomically(dmesr_home() / "written-by-a-test", "the suite's own")


def snapshot(folder: Path) -> dict:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_test_session_neither_sees_nor_changes_the_users_data_home(tmp_path):
    user = tmp_path / "user"
    for home in (user / ".cache" / "dmesr", user / "elsewhere"):  # the default home and one set by DMESR_HOME
        save_registration({"name": "shop", "format": "table", "interactions": "/nowhere/orders.csv"}, home)
    before = snapshot(user)
    tests = ["tests/test_data_home.py::test_a_test_writes_into_the_suites_data_home",
             "tests/test_data_registry.py::test_known_datasets_and_unknown_name"]  # lists no registered "shop"
    environment = {key: value for key, value in os.environ.items() if key != "DMESR_HOME"}
    for home in (None, user / "elsewhere"):
        env = {**environment, "HOME": str(user), "PYTHONPATH": str(REPOSITORY)}
        env.update({"DMESR_HOME": str(home)} if home else {})
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                                cwd=REPOSITORY, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-2000:]
        assert snapshot(user) == before

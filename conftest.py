"""The test suite's own data home.

Every test, notebook kernel and subprocess the suite starts sees a fresh temporary ``$DMESR_HOME``
(made when the session starts, removed when it ends), never the user's: their registered datasets,
downloads, caches and features are neither read nor written. Built-in datasets are fetched into it
once per session (pip's own cache keeps that quick).
"""

from __future__ import annotations

import os
import shutil
import tempfile

HOME_VARIABLE = "DMESR_HOME"


def pytest_configure(config):
    config.stash_user_home = os.environ.get(HOME_VARIABLE)
    config.suite_home = tempfile.mkdtemp(prefix="dmesr-test-home-")
    os.environ[HOME_VARIABLE] = config.suite_home


def pytest_unconfigure(config):
    if getattr(config, "suite_home", None) is None:
        return
    if config.stash_user_home is None:
        os.environ.pop(HOME_VARIABLE, None)
    else:
        os.environ[HOME_VARIABLE] = config.stash_user_home
    shutil.rmtree(config.suite_home, ignore_errors=True)

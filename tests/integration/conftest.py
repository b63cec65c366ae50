# SPDX-License-Identifier: GPL-2.0-or-later
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))


import pytest  # noqa: E402


@pytest.fixture
def vms():
    """VMs a test starts; all are stopped when it ends, pass or fail."""
    started = []
    yield started
    for vm in started:
        vm.stop()

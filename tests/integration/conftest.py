# SPDX-License-Identifier: GPL-2.0-or-later
import os
import shutil

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "race: races guest writes against handoff rounds, or an "
        "early-started VM against its segments still arriving; "
        "HANDOFF_SOAK=N runs each such test N times (scripts/soak-races.sh)")


def pytest_generate_tests(metafunc):
    """HANDOFF_SOAK=N: every test marked `race` runs N times, on the
    module's bases made once."""
    rounds = int(os.environ.get("HANDOFF_SOAK", "1"))
    if rounds > 1 and metafunc.definition.get_closest_marker("race"):
        metafunc.fixturenames.append("soak_round")
        metafunc.parametrize("soak_round", range(rounds))


@pytest.fixture
def vms():
    """VMs a test starts; all are stopped when it ends, pass or fail."""
    started = []
    yield started
    for vm in started:
        vm.stop()


@pytest.fixture(scope="module")
def module_tmp(request, tmp_path_factory):
    """A directory for what a module makes once (its bases); removed when
    the module ends, since pytest keeps every tmp dir of a session and a
    base holds a whole memory image."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.handoff_failed = report.failed


@pytest.fixture(autouse=True)
def _free_test_disk_space(request):
    """Keeps a full run within a CI machine's disk: a test's RAM dumps
    (two per identity check, each the guest's RAM size) are gone once it
    ends, since a failure message already names the first differing byte;
    the rest of a passing test's tmp dir goes too. A failing test keeps its
    images and logs; HANDOFF_KEEP_TMP=1 keeps everything. Autouse fixtures are set up first, so this runs after
    `vms` has stopped the test's QEMUs."""
    yield
    tmp = request.node.funcargs.get("tmp_path")
    if tmp is None or os.environ.get("HANDOFF_KEEP_TMP"):
        return
    if getattr(request.node, "handoff_failed", True):
        for dump in tmp.rglob("*.ram"):
            dump.unlink(missing_ok=True)
    else:
        shutil.rmtree(tmp, ignore_errors=True)

# SPDX-License-Identifier: GPL-2.0-or-later
"""Overlays made offline: from a VM's images, not from its running QEMU.

A VM that is not running is its disk images and, if it was suspended, its
memory: a QEMU migration stream kept in a file (`migrate "exec:cat >
FILE"` on its QEMU). Here QEMU is started on them with the VM's own
options, paused (-S: the guest does not run one instruction), loads the
state if there is one, and saves the VM with handoff-overlay-save. The
encoder and the description are the ones a running VM's save uses, so a
cloudlet cannot tell the two kinds of overlay apart. Without a state the
overlay holds the VM at power-on: synthesized, it boots from its disks.
"""

import os
import shlex
import subprocess
import sys
import tempfile
import time

from .launcher import DEFAULT_QEMU, qemu_failure, wait_for_monitor
from ..qmp import QMPClient, QMPError, end_qemu

# Options this tool owns: the VM's options must not bring their own.
_OWN_OPTIONS = ("-incoming", "-handoff", "-daemonize", "-loadvm", "-qmp",
                "-snapshot")


class CreateError(Exception):
    """The overlay could not be made, with the reason."""


def _check_vm_args(vm_args):
    if not vm_args:
        raise CreateError("give the VM's QEMU options after `--`, as the VM "
                          "is started (machine, memory, drives, devices)")
    for arg in vm_args:
        # QEMU reads --name as -name.
        if "-" + arg.split("=")[0].lstrip("-") in _OWN_OPTIONS:
            raise CreateError(f"{arg}: this tool sets it itself; give the "
                              f"VM's options only")


class _PausedQEMU:
    """QEMU on the VM's images, paused, with a monitor of ours."""

    def __init__(self, qemu, vm_args, workdir, incoming):
        self.qmp_path = os.path.join(workdir, "qmp.sock")
        self.log_path = os.path.join(workdir, "qemu.log")
        display = [] if {"-display", "-nographic"} & set(vm_args) \
            else ["-display", "none"]
        args = [qemu, *display, *vm_args, "-S",
                *(["-incoming", "defer"] if incoming else []),
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(args, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.qmp = None
        try:
            self._connect()
        except (CreateError, OSError, RuntimeError, ValueError):
            # QEMU makes its socket before it opens the drives: a bad
            # option or a locked image ends it after we could connect.
            end_qemu(None, self.proc)
            raise CreateError(f"QEMU did not start: {self.failure()}") \
                from None

    def _connect(self):
        wait_for_monitor(self.proc, self.qmp_path, 60)
        self.qmp = QMPClient(self.qmp_path, timeout=120)

    def failure(self):
        return qemu_failure(self.log_path)

    def monitor_lost(self, e):
        """Why the monitor failed with @e: QEMU's own words if it ended."""
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            return f"QEMU's monitor failed: {e}"
        return f"QEMU exited: {self.failure()}"

    def migration(self, done, timeout, progress=None):
        """Polls query-migrate until its status is in @done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CreateError(f"QEMU exited: {self.failure()}")
            try:
                info = self.qmp.cmd("query-migrate")
            except OSError as e:
                raise CreateError(self.monitor_lost(e)) from None
            if info.get("status") in done:
                return info
            if progress:
                progress(info)
            time.sleep(0.1)
        raise CreateError(f"no end after {timeout} s")

    def stop(self):
        end_qemu(self.qmp, self.proc)


def _load_state(vm, state):
    """The suspended VM's memory and devices, from a migration stream."""
    vm.qmp.cmd("migrate-incoming",
               uri="exec:exec cat -- " + shlex.quote(os.path.abspath(state)))
    # QEMU exits when a stream does not load, and the incoming side's
    # query-migrate has no error text: its log has the cause.
    try:
        info = vm.migration(("completed", "failed"), timeout=3600)
    except CreateError:
        info = {"status": "failed"}
    if info["status"] != "completed":
        raise CreateError(f"cannot load the state {state}: {vm.failure()}")


def _show_progress(info):
    handoff = info.get("handoff") or {}
    ram = info.get("ram") or {}
    written = handoff.get("output-bytes", ram.get("transferred", 0))
    print(f"\rhandoff-synthesis: saving, {written / 1e6:.1f} MB written",
          end="", file=sys.stderr, flush=True)


def create_overlay(path, base, vm_args, state=None, compression=None,
                   qemu=None, progress=True):
    """Writes the overlay of the VM that @vm_args (its QEMU options, its
    disk images in them) and @state (None: at power-on) describe, against
    the base directory @base. Returns query-migrate's final answer."""
    _check_vm_args(vm_args)
    if state and not os.path.isfile(state):
        raise CreateError(f"{state}: no such state file")
    with tempfile.TemporaryDirectory(prefix="handoff-create-") as workdir:
        vm = _PausedQEMU(qemu or DEFAULT_QEMU, vm_args, workdir,
                         incoming=bool(state))
        saved = False
        try:
            info = _save(vm, path, base, state, compression, progress)
            saved = True
            return info
        except QMPError as e:
            raise CreateError(str(e)) from None
        except OSError as e:
            raise CreateError(vm.monitor_lost(e)) from None
        finally:
            vm.stop()
            # QEMU removes its partial file when a save fails, not when
            # it is told to quit in the middle of one (Ctrl-C, SIGTERM).
            if not saved and os.path.exists(path + ".part"):
                os.unlink(path + ".part")


def _save(vm, path, base, state, compression, progress):
    if state:
        _load_state(vm, state)
    args = {"path": os.path.abspath(path), "base": os.path.abspath(base)}
    if compression:
        args["compression"] = compression
    vm.qmp.cmd("handoff-overlay-save", **args)
    info = vm.migration(("completed", "failed", "cancelled"),
                        timeout=24 * 3600,
                        progress=_show_progress if progress else None)
    if progress:
        print(file=sys.stderr)
    if info["status"] != "completed":
        raise CreateError(info.get("error-desc", info["status"]))
    return info

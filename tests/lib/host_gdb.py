# SPDX-License-Identifier: GPL-2.0-or-later
"""gdb attached to a running QEMU in non-stop mode: the thread that reaches
a source line is held there while every other thread runs on, which opens
a race window at will (a test then does what the window allows, and lets
the thread go)."""

import os
import subprocess
import threading
import time

from qemu_handoff.paths import BUILD


def qemu_source_line(path, after, skip=("/*", "*", "*/")):
    """'FILE:LINE' of the first statement after the line of QEMU's source
    tree (build/src/qemu/@path) that holds @after, comments and blank
    lines skipped: a location that does not depend on our patches'
    offsets."""
    with open(os.path.join(BUILD, "src", "qemu", path)) as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    for i in range(start + 1, len(lines)):
        text = lines[i].strip()
        if text and not text.startswith(skip):
            return f"{os.path.basename(path)}:{i + 1}"
    raise LookupError(f"nothing follows {after!r} in {path}")


class HeldThread:
    """gdb on process @pid: the first thread to reach @location stops
    there (wait_held), the others run; release() lets it go and detaches."""

    def __init__(self, pid, location):
        self.output = ""
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            ["gdb", "-q", "-nx", "-ex", "set pagination off",
             "-ex", "set confirm off", "-ex", "set width 0",
             "-ex", "set non-stop on",
             "-ex", f"attach {pid}", "-ex", f"break {location}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self._run_all()
        except BaseException:
            # A gdb that could not let the process run must not hold it.
            self.proc.kill()
            raise

    def _run_all(self, timeout=30):
        """In non-stop mode attach stops the threads one by one, reported
        after it returns: continue them until every one runs."""
        deadline = time.monotonic() + timeout
        while True:
            time.sleep(0.5)
            self._command("continue -a &")
            mark = len(self.output)
            self._command("info threads")
            self._command("echo threads-listed\\n")
            while "threads-listed" not in self.output[mark:]:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise TimeoutError(f"gdb did not attach:\n"
                                       f"{self.output[-2000:]}")
                time.sleep(0.05)
            listing = self.output[mark:]
            threads = [line for line in listing.splitlines()
                       if " Thread 0x" in line]
            if threads and all("(running)" in t for t in threads):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"threads still stopped:\n{listing}")

    def _read(self):
        for line in self.proc.stdout:
            with self._lock:
                self.output += line

    def _command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_held(self, timeout):
        deadline = time.monotonic() + timeout
        while "hit Breakpoint 1" not in self.output:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise TimeoutError(f"no thread reached the breakpoint:\n"
                                   f"{self.output[-2000:]}")
            time.sleep(0.05)

    def release(self):
        """The held thread goes on; gdb detaches and ends."""
        self._command("delete")
        self._command("detach")
        self._command("quit")
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

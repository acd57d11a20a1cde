"""`vattn serve` as the Python tests start it: the real binary on a free 127.0.0.1 port, its log in a file.

Environment (all optional; unset, the server runs as CI runs it, on the CPU): VATTN_BIN (default
.build/debug/vattn), VATTN_SERVE_ARGS (extra flags appended to every `vattn serve`, split like a shell does, e.g.
"--backend cuda --kv paged"), VATTN_START_TIMEOUT (seconds to wait for /health, default 60: a GPU's first start
compiles kernels unless VATTN_KERNEL_CACHE has them).
"""

import atexit
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("VATTN_BIN", os.path.join(ROOT, ".build", "debug", "vattn"))
SERVE_ARGS = shlex.split(os.environ.get("VATTN_SERVE_ARGS", ""))
START_TIMEOUT = float(os.environ.get("VATTN_START_TIMEOUT", "60"))
MODEL = "smollm2-135m"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict:
    """VmRSS, RssAnon, RssFile, RssShmem of a process, in bytes (/proc/PID/status)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) * 1024
    return out


class Server:
    """`vattn serve --slots 4 --max-context CONTEXT *args $VATTN_SERVE_ARGS`, up once /health answers 200."""

    def __init__(self, *args, context: int = 1024):
        if not os.path.exists(BIN):
            pytest.fail(f"{BIN} not built (swift build --product vattn)")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would block the server
        self.proc = subprocess.Popen(
            [BIN, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--slots", "4", "--max-context",
             str(context), *args, *SERVE_ARGS], stdout=self.log, stderr=subprocess.STDOUT, text=True)
        # A test that fails before it stops its server must not leave it running after pytest ends.
        atexit.register(self.kill)
        deadline = time.time() + START_TIMEOUT
        while True:
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.proc.kill()
                pytest.fail("vattn serve did not start: " + self.output())
            time.sleep(0.2)

    def kill(self):
        """SIGKILL if still running (the end of a test that failed before it stopped the server)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait(self, timeout: float) -> int:
        """The exit status, once the process ends within `timeout` (else it is killed and the test fails)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"vattn serve did not exit within {timeout} s:\n" + self.output()[-4000:])

    def stop(self, check: bool = True):
        """SIGTERM; with `check`, it must exit 0 within 30 s."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        status = self.wait(30)
        if check:
            assert status == 0, self.output()[-4000:]

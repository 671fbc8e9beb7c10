"""Helpers for the app's tests and benchmarks (not used by the app itself).

- :func:`huge_png`: a real 20000 x 20000 PNG of one colour, written without ever
  holding the image in memory (a few seconds, about 1 MB);
- :class:`ServerProcess`: the app launched in a child process (``python -m
  hfgd_lab.app``), its URL, its private upload folder, and its resident memory;
- :func:`ensure_chromium`: Debian's ``chromium``, installed with apt when missing.
"""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def huge_png(path, width: int = 20000, height: int = 20000, color=(90, 140, 200)) -> Path:
    """A valid one-colour RGB PNG, streamed through zlib row by row (no big buffers)."""
    path = Path(path)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\x00" + bytes(color) * width  # filter type 0, then the pixels
    z = zlib.compressobj(6)
    rows = 64
    block = row * rows
    parts = [z.compress(block) for _ in range(height // rows)]
    parts += [z.compress(row) for _ in range(height % rows)] + [z.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m hfgd_lab.app`` in a child process, on a free port.

    Args:
        weights_dir: the zoo folder (``HFGD_LAB_WEIGHTS_DIR``) for the child.
        args: extra command-line arguments.
        threads: torch / BLAS threads of the child.
    """

    def __init__(self, weights_dir=None, args=(), threads: int = 1, log=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads), GRADIO_ANALYTICS_ENABLED="False",
                   HF_HUB_OFFLINE="1", NO_PROXY="127.0.0.1,localhost")
        if weights_dir is not None:
            env["HFGD_LAB_WEIGHTS_DIR"] = str(weights_dir)
        self.log_path = Path(log) if log else None
        out = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hfgd_lab.app", "--port", str(self.port),
             "--threads", str(threads), *map(str, args)],
            env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> str:
        import urllib.request
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with code {self.proc.returncode}"
                                   + self._log_tail())
            try:
                with urllib.request.urlopen(self.url + "gradio_api/info", timeout=5) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"the app did not answer within {timeout:.0f} s" + self._log_tail())

    def private_folder(self) -> Path:
        """The server's own upload folder, as its start-up line names it."""
        for line in self.log_path.read_text().splitlines():
            if "uploads in " in line:
                return Path(line.rsplit("uploads in ", 1)[1].strip())
        raise RuntimeError("the server log names no upload folder" + self._log_tail())

    def _log_tail(self) -> str:
        if self.log_path and self.log_path.is_file():
            return "\n" + self.log_path.read_text()[-3000:]
        return ""

    def memory(self) -> dict:
        """Resident memory of the server process, MB: ``rss`` now and ``peak`` (VmHWM)."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key = "rss" if line.startswith("VmRSS") else "peak"
                    out[key] = int(line.split()[1]) / 1024
        return out

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the server process has used so far;
        unlike wall time, it does not grow when other processes load the machine."""
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def ensure_chromium(timeout: float = 900) -> str:
    """Path of Debian's chromium; installed with ``apt-get`` (as root) when missing."""
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"{CHROMIUM} is missing; install Debian's chromium package "
                           "(apt-get install chromium) as root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], env=env, check=False, timeout=timeout,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
                   env=env, check=True, timeout=timeout, stdout=subprocess.DEVNULL)
    if not Path(CHROMIUM).is_file():
        raise RuntimeError(f"apt-get installed chromium but {CHROMIUM} is not there")
    return CHROMIUM

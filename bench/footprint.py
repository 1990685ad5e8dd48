"""Start-up and memory of the service's own command: `python -m bench.footprint`.

Starts the container's command (`bench.server.loopback_command`) with the committed weights,
times process start to the first 200 from /readyz, reads the server's CPU time at that
moment (less sensitive to other work on a shared machine than the wall time), and its
resident memory (VmRSS) after a second of idleness; then stops it with SIGTERM. Prints each
run and the median; whether torch was imported is read from the process's memory maps.

    python -m bench.footprint --runs 5
    python -m bench.footprint --tree ../old --python ../old/.venv/bin/python   # another checkout, to compare
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.server import ROOT, container_command, free_port


def ready_after(url: str, process: subprocess.Popen[bytes], started: float, bound: float = 60) -> float:
    while time.monotonic() - started < bound:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.005)
    raise SystemExit(f"not ready within {bound} s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_mib(pid: int) -> float:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def one_run(python: str, tree: Path) -> tuple[float, float, float, bool]:
    port = free_port()
    argv = container_command()  # uvicorn app.main:app --host 0.0.0.0 --port 8000 ...
    argv[argv.index("--host") + 1], argv[argv.index("--port") + 1] = "127.0.0.1", str(port)
    started = time.monotonic()
    process = subprocess.Popen(
        [python, "-m", *argv], cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )  # fmt: skip
    try:
        ready = ready_after(f"http://127.0.0.1:{port}", process, started)
        cpu = cpu_seconds(process.pid)
        time.sleep(1.0)
        torch = "libtorch" in Path(f"/proc/{process.pid}/maps").read_text()
        return ready, cpu, rss_mib(process.pid), torch
    finally:
        process.terminate()
        process.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--python", default=sys.executable, help="the interpreter to serve with (default: this one)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to serve from (default: this one)")
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        runs.append(one_run(args.python, args.tree))
        ready, cpu, rss, torch = runs[-1]
        load = os.getloadavg()[0]
        print(f"run {i + 1}: start to /readyz 200 {ready:.2f} s, server CPU {cpu:.2f} s, idle RSS {rss:.1f} MiB, "
              f"torch loaded: {torch}, load average {load:.1f}")  # fmt: skip
    ready, cpu, rss = (statistics.median(r[k] for r in runs) for k in range(3))
    print(f"median of {args.runs}: start to /readyz 200 {ready:.2f} s, server CPU {cpu:.2f} s, idle RSS {rss:.1f} MiB")


if __name__ == "__main__":
    main()

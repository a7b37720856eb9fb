"""Check that a ``--backend ray`` search shows up in the Ray dashboard, and screenshot it.

Starts a small search (``python -m nas.search --backend ray``, tiny CvT space, synthetic data) in a
subprocess, reads the dashboard URL the search prints, polls the dashboard's HTTP API on 127.0.0.1 until
the search's job and its trial actors are listed, then opens the dashboard's Actors page in headless
Chromium and saves a screenshot (``docs/ray-dashboard.png`` by default)::

    apt-get install -y chromium          # Debian's package; not a project dependency
    python scripts/ray_dashboard_check.py

Token authentication (Ray 2.60's default) stays on: API calls send ``Authorization: Bearer <token>`` and
the browser gets the token as the dashboard's own ``ray-authentication-token`` cookie, set over the
Chrome DevTools protocol before the page loads. Exit code 0 when every check passed.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from nas.ray_cluster import RayCluster, auth_token

REPO = Path(__file__).resolve().parents[1]

# 320 architectures, 2.6-7.0 MMACs at 64x64: each proxy training takes seconds, long enough to be seen.
SPACE = """\
name: dashboard-check
family: cvt
img_size: 64
stages:
  - {depth: 1, embed_dim: 16, num_heads: 1, kv_stride: [1, 2], mlp_ratio: [1.0, 2.0]}
  - {depth: [1, 2], embed_dim: 32, num_heads: 2, kv_stride: [1, 2], mlp_ratio: [2.0, 4.0]}
  - {depth: 1, embed_dim: [32, 64], num_heads: 2, mlp_ratio: [2.0, 4.0]}
"""
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
_URL_LINE = re.compile(r"ray dashboard: (http://\S+)")


def start_search(work: Path, trials: int, workers: int, epochs: int) -> tuple[subprocess.Popen, Path]:
    (work / "space.yaml").write_text(SPACE)
    log = work / "search.log"
    cmd = [sys.executable, "-m", "nas.search", "--backend", "ray", "--space", str(work / "space.yaml"),
           "--budget", "4.5MFLOPs", "--trials", str(trials), "--workers", str(workers), "--out", str(work / "run"),
           "--data", "synthetic", "--proxy-epochs", str(epochs), "--proxy-train-subset", "2048",
           "--proxy-val-subset", "256", "--proxy-batch-size", "32"]
    env = {**os.environ, "CVT_NAS_OFFLINE": "1", "CVT_NAS_CACHE": str(work / "cache")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    return proc, log


def wait_for_url(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _URL_LINE.search(log.read_text())
        if match:
            return match.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"the search exited ({proc.returncode}) before printing the dashboard URL:\n"
                             f"{log.read_text()[-2000:]}")
        time.sleep(0.5)
    raise SystemExit(f"no dashboard URL in the search's output after {timeout:.0f} s")


def poll_dashboard(cluster: RayCluster, run_dir: Path, listed: int, timeout: float) -> tuple[dict, list[dict]]:
    """Wait until the search's job is RUNNING with ``listed`` trial actors, one ALIVE; the job and its actors."""
    deadline = time.monotonic() + timeout
    job, actors = {}, []
    while time.monotonic() < deadline:
        try:
            jobs = cluster.get_json("/api/jobs/")
            job = next((j for j in jobs if (j.get("metadata") or {}).get("run_dir") == str(run_dir)), {})
            every = cluster.get_json("/api/v0/actors?detail=1&limit=1000")["data"]["result"]["result"]
            actors = [a for a in every if a.get("job_id") == job.get("job_id") and a.get("class_name") == "ProxyTrial"]
        except OSError:
            pass  # dashboard still starting
        if job.get("status") == "RUNNING" and len(actors) >= listed and any(a.get("state") == "ALIVE" for a in actors):
            break
        time.sleep(1.0)
    return job, actors


class _DevTools:
    """The few Chrome DevTools protocol calls a screenshot needs, over one page's websocket."""

    def __init__(self, ws: Any):
        self.ws, self.next_id = ws, 0

    async def __call__(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        async for message in self.ws:
            data = json.loads(message.data)
            if data.get("id") == self.next_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
        raise RuntimeError("the browser closed the DevTools connection")


async def _capture(chromium: str, base: str, page: str, token: str | None, wait_for: str, out: Path,
                   size: tuple[int, int], timeout: float) -> bool:
    import aiohttp

    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    browser = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                f"--window-size={size[0]},{size[1]}", "--remote-debugging-port=0", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(100):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                target = next(t for t in await response.json() if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = _DevTools(ws)
                if token:  # what the dashboard's login box would store after POST /api/authenticate
                    await cdp("Network.enable")
                    await cdp("Network.setCookie", name="ray-authentication-token", value=token, url=base,
                              httpOnly=True)
                await cdp("Page.navigate", url=base + page)
                found, deadline = False, time.monotonic() + timeout
                while not found and time.monotonic() < deadline:
                    await asyncio.sleep(1.0)
                    text = await cdp("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
                    found = wait_for in str(text.get("result", {}).get("value", ""))
                await asyncio.sleep(1.0)  # let the table finish rendering
                shot = await cdp("Page.captureScreenshot", format="png")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(base64.b64decode(shot["data"]))
                return found
    finally:
        browser.terminate()
        browser.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screenshot", type=Path, default=REPO / "docs" / "ray-dashboard.png")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--listed", type=int, default=3, help="trial actors to wait for before the screenshot")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for each stage")
    parser.add_argument("--keep", type=Path, help="run the search in this directory and keep it")
    args = parser.parse_args(argv)

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    work = args.keep or Path(tempfile.mkdtemp(prefix="ray-dashboard-check-"))
    work.mkdir(parents=True, exist_ok=True)
    proc, log = start_search(work, args.trials, args.workers, args.epochs)
    checks: list[tuple[str, bool, str]] = []
    try:
        url = wait_for_url(proc, log, args.timeout)
        host = url.split("//", 1)[1].rsplit(":", 1)[0]
        checks.append(("dashboard on loopback", host == "127.0.0.1", url))
        with urllib.request.urlopen(url + "/api/authentication_mode", timeout=10) as response:
            mode = json.load(response)["authentication_mode"]
        cluster = RayCluster(address="?", dashboard_url=url, started_here=False, auth=mode)
        if mode == "token":
            try:
                urllib.request.urlopen(url + "/api/jobs/", timeout=10)
                checks.append(("API refuses requests without the token", False, "answered 200"))
            except Exception as err:  # noqa: BLE001 - the 401 is what we want to see
                checks.append(("API refuses requests without the token", "401" in str(err), str(err)))
        job, actors = poll_dashboard(cluster, (work / "run").resolve(), args.listed, args.timeout)
        checks.append(("search job listed and RUNNING", job.get("status") == "RUNNING",
                       f"job {job.get('job_id')} {job.get('status')} {job.get('metadata')}"))
        alive = [a for a in actors if a.get("state") == "ALIVE"]
        checks.append(("trial actors listed, one ALIVE", bool(alive),
                       "; ".join(f"{a['class_name']} {a.get('state')} pid {a.get('pid')}: {a.get('repr_name')}"
                                 for a in actors)))
        if chromium is None:
            checks.append(("screenshot", False, "chromium not found: apt-get install -y chromium"))
        else:
            found = asyncio.run(_capture(chromium, url, "/#/actors", auth_token() if mode == "token" else None,
                                         "trial ", args.screenshot, (1400, 900), 60.0))
            checks.append(("screenshot shows the trial actors", found and args.screenshot.exists(),
                           str(args.screenshot)))
        code = proc.wait(timeout=args.timeout * 2)
        checks.append(("search finished", code == 0, f"exit {code}; {work / 'run'}"))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    width = max(len(name) for name, _, _ in checks)
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<{width}}  {detail}")
    if args.keep is None and all(ok for _, ok, _ in checks):
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

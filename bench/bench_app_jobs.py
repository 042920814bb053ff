"""Does watching a job starve it? A study launched from the app, with its page open in a real
browser, against the same study from the CLI (goal: ratio >= 0.8).

    .venv/bin/python bench/bench_app_jobs.py [--limit 24] [--threads 2] [--dtype float32]

Runs ``metacog study`` on a fresh workspace (timed), then starts ``streamlit run app.py``,
opens the Workspace page of a second fresh workspace with the same settings in headless
Chromium, clicks "Run study" and keeps the page open (its progress fragment reruns every
second) until the job's record says done. Prints the CPU, both times and, last,
``ratio <cli seconds / app seconds>``. Needs chromium (``/usr/bin/chromium``) and playwright.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                flags = open("/proc/cpuinfo").read()
                return line.split(":", 1)[1].strip() + (" (avx512_bf16)" if "avx512_bf16" in flags else " (no avx512_bf16)")
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from test_browser import settle, start_app  # the browser test's server and page helpers

    from metacog.core.settings import ModelSettings, StudySettings
    from metacog.core.workspace import Workspace, read_json

    print(f"cpu: {cpu()}; threads {a.threads}; dtype {a.dtype}; {a.limit} items")
    tmp = Path(tempfile.mkdtemp(prefix="metacog-bench-app-"))
    cache = tmp / "cache"
    (cache / "workspaces").mkdir(parents=True)
    args = ["--model", "default", "--dataset", "world-facts", "--limit", str(a.limit), "--seed", "0",
            "--threads", str(a.threads), "--dtype", a.dtype, "--quiet"]
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "metacog.cli", "study", "--workspace", str(tmp / "cli"), *args], check=True,
                   cwd=ROOT)
    t_cli = time.time() - t0
    print(f"cli study: {t_cli:.1f} s")

    # the app's workspace, with the same settings, not yet run
    Workspace(cache / "workspaces" / "app").init(
        ModelSettings(model="default", threads=a.threads, dtype=a.dtype), StudySettings(limit=a.limit, seed=0))
    proc, url = start_app(cache, tmp / "streamlit.log", tiny_loader=False)
    try:
        with sync_playwright() as p:
            br = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = br.new_page(viewport={"width": 1300, "height": 900})
            page.goto(f"{url}/?ws=app")
            settle(page, timeout=180)
            t1 = time.time()
            page.get_by_role("button", name="Run study", exact=True).first.click()
            rec_path = cache / "workspaces" / "app" / ".metacog-jobs" / "study.json"
            while True:
                rec = read_json(rec_path, {}) or {}
                if rec.get("status") in ("done", "error", "stopped"):
                    break
                if time.time() - t1 > 3600:
                    raise TimeoutError("the app's study did not finish within an hour")
                time.sleep(0.5)
            t_app = time.time() - t1
            br.close()
    finally:
        proc.terminate()
    if rec.get("status") != "done":
        print(f"app study ended {rec.get('status')}: {rec.get('error')}")
        return 1
    print(f"app study (page open, own process): {t_app:.1f} s, items {json.dumps(rec.get('result', {}).get('n_items'))}")
    print(f"ratio {t_cli / t_app:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

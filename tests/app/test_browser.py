"""The app in a real browser: ``streamlit run app.py`` on a free localhost port over tiny
workspaces, driven by Debian's Chromium through Playwright. Every page must render its main
plotly chart (a ``.js-plotly-plot`` element with an SVG inside) and no exception box; a
screenshot of each page is saved (under the test's tmp dir, and also under
``$METACOG_SCREENSHOTS`` when that is set).

Skipped when Chromium (``/usr/bin/chromium``; ``apt-get install -y chromium``) or the
playwright package is missing. Never runs ``playwright install``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("METACOG_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _skip_reason() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"Chromium not installed at {CHROMIUM} (apt-get install -y chromium); CI installs it"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright Python package is not installed (pip install playwright; no browser download needed)"
    return None


def _test_app_module():
    spec = importlib.util.spec_from_file_location("_metacog_test_app", Path(__file__).with_name("test_app.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError("streamlit did not become healthy")


TINY_LOADER = """
import sys
sys.path.insert(0, {tests!r})
from conftest import make_tiny_llama, make_tokenizer


def load(settings):
    import torch
    from metacog.model.loading import wrap

    torch.set_num_threads(1)
    tok = make_tokenizer()
    return wrap(make_tiny_llama(tok), tok, spec="tiny", name="tiny-llama", weights_hash="tiny0", threads=1)
"""


def start_app(cache: Path, log: Path, tiny_loader: bool = True) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` on a free port; with ``tiny_loader`` the app's model loader is the
    tiny random model (``$METACOG_MODEL_LOADER``, see metacog.app.ui)."""
    port = _free_port()
    env = {**os.environ, "METACOG_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    if tiny_loader:
        (cache / "metacog_tiny_loader.py").write_text(TINY_LOADER.format(tests=str(Path(__file__).resolve().parents[1])))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cache), env.get("PYTHONPATH", "")]))
        env["METACOG_MODEL_LOADER"] = "metacog_tiny_loader:load"
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
    except BaseException:
        proc.terminate()
        raise
    return proc, url


def settle(page, timeout: float = 90, quiet: float = 1.5) -> None:
    """Wait until the app stopped running: the page has drawn its title, and Streamlit's status
    widget ("Running...") has been gone for ``quiet`` seconds in a row."""
    page.wait_for_selector('[data-testid="stMain"] [data-testid="stHeading"]', timeout=timeout * 1000)
    t0 = time.time()
    calm_since = None
    while time.time() - t0 < timeout:
        running = page.locator('[data-testid="stStatusWidget"]').filter(has_text="Running").count() > 0
        if running:
            calm_since = None
        elif calm_since is None:
            calm_since = time.time()
        elif time.time() - calm_since >= quiet:
            page.wait_for_load_state("networkidle")  # lazily loaded widget code
            return
        time.sleep(0.25)
    raise TimeoutError("the app kept running")


def full_screenshot(page, path: Path) -> None:
    """Streamlit scrolls inside its main container, so grow the viewport to the content first."""
    h = page.evaluate("""() => Math.max(...[...document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"], section')]
        .map(e => e.scrollHeight), document.body.scrollHeight)""")
    vp = page.viewport_size
    page.set_viewport_size({"width": vp["width"], "height": min(int(h) + 40, 12000)})
    page.wait_for_timeout(1200)  # plotly charts resize to the new layout
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(vp)


def shoot(page, url: str, out: Path, name: str, min_plots: int = 1, timeout: float = 90) -> int:
    """Open ``url``, wait for it to settle and for ``min_plots`` rendered plotly charts, save a
    full-page screenshot ``out/name.png``; returns the number of charts."""
    page.goto(url)
    settle(page, timeout)
    page.wait_for_function(
        f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {min_plots}", timeout=timeout * 1000)
    settle(page, timeout, quiet=1.0)
    page.wait_for_timeout(800)  # plotly's transitions
    exc = page.locator('[data-testid="stException"]').count()
    n = page.locator(".js-plotly-plot").count()
    out.mkdir(parents=True, exist_ok=True)
    full_screenshot(page, out / f"{name}.png")
    assert exc == 0, f"{name}: {exc} exception box(es) on the page"
    return n


@pytest.fixture(scope="module")
def served_app(tmp_path_factory, tiny_lm):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    cache = tmp_path_factory.mktemp("browser-cache")
    mod = _test_app_module()
    mod.build_workspaces(cache, tiny_lm)
    from metacog.core.workspace import Workspace

    Workspace(cache / "workspaces" / "run-here").init(*mod._tiny_settings())
    log = cache / "streamlit.log"
    proc, url = start_app(cache, log)
    yield url, cache
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser(served_app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def test_deep_link_as_the_first_request(served_app, browser):
    """A link to a page (not the root) as the server's very first request still runs app.py:
    the sidebar's workspace picker is there and shows the linked workspace (Streamlit would
    otherwise run the page file alone, in its older pages/ mode). Defined first: the first request."""
    url, _ = served_app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/Probes?ws=tiny-rich")
    settle(page)
    picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]')
    picker.first.wait_for(timeout=60_000)
    shown = picker.first.text_content() + " " + " ".join(picker.first.locator("input").evaluate_all("els => els.map(e => e.value)"))
    assert "tiny-rich" in shown, shown
    assert page.locator('[data-testid="stMain"] h1').filter(has_text="Probes").count() == 1
    assert page.locator('[data-testid="stException"]').count() == 0
    page.close()


def test_every_page_renders_its_chart(served_app, browser, tmp_path):
    import pandas as pd

    url, cache = served_app
    item = pd.read_parquet(cache / "workspaces" / "tiny-rich" / "items.parquet")["id"].iloc[3]
    out = tmp_path / "screenshots"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    pages = {
        "1_workspace": (f"{url}/?ws=tiny-rich", 0),
        "2_answers": (f"{url}/Answers_and_confidence?ws=tiny-rich", 3),
        "3_probes": (f"{url}/Probes?ws=tiny-rich", 2),
        "4_item_explorer": (f"{url}/Item_explorer?ws=tiny-rich&item={item}", 2),
    }
    for name, (u, k) in pages.items():
        if k == 0:  # the workspace page has no chart: check its stage table instead
            page.goto(u)
            settle(page)
            page.wait_for_selector('[data-testid="stDataFrame"]', timeout=60_000)
            assert page.get_by_text("Run study").count() >= 1
            assert page.locator('[data-testid="stException"]').count() == 0
            out.mkdir(parents=True, exist_ok=True)
            full_screenshot(page, out / f"{name}.png")
            continue
        n = shoot(page, u, out, name, min_plots=k)
        assert n >= k, f"{name}: {n} charts"
    assert page.get_by_text(item).count() >= 1  # the item explorer opened the linked item
    dest = os.environ.get("METACOG_SCREENSHOTS")
    if dest:
        shutil.copytree(out, dest, dirs_exist_ok=True)
    assert len(list(out.glob("*.png"))) == 4
    page.close()


def test_run_study_in_the_browser(served_app, browser, tmp_path):
    """Click "Run study" on a fresh workspace: the background run finishes, the page redraws
    by itself, and the answers stage shows as done (tiny model injected into the server)."""
    url, cache = served_app
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/?ws=run-here")
    settle(page)
    # the tiny model gets every item wrong: run the answers and activations stages only
    remove = page.locator('[data-testid="stMultiSelect"] button[aria-label="Remove probes"]')
    if remove.count():
        remove.first.click()
        settle(page)
    page.get_by_role("button", name="Run study", exact=True).click()
    page.wait_for_function(
        "document.body.innerText.includes('Study finished') || document.body.innerText.includes('The study failed')",
        timeout=120_000)
    settle(page)
    full_screenshot(page, tmp_path / "run.png")
    body = page.inner_text("body")
    assert (cache / "workspaces" / "run-here" / "answers.parquet").exists()
    assert "Study finished" in body, body[:2000]
    assert page.locator('[data-testid="stException"]').count() == 0
    page.goto(f"{url}/Answers_and_confidence?ws=run-here")
    settle(page)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 1", timeout=60_000)
    dest = os.environ.get("METACOG_SCREENSHOTS")
    if dest:
        shutil.copy(tmp_path / "run.png", Path(dest) / "5_after_run.png")
    page.close()


def test_lab_demo_from_a_fresh_cache(tmp_path, tiny_lm, browser):
    """The demo path on a fresh cache: launch the default study (a first look, then the full
    study, in the job's own process), keep the page open, see the first plots while the full
    study still runs, ask the Playground a question, and read the logit lens of one item."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    import json
    import signal

    cache = tmp_path / "fresh-cache"
    cache.mkdir()
    proc, url = start_app(cache, tmp_path / "streamlit.log")
    out = tmp_path / "demo"
    out.mkdir()
    rec_path = None
    try:
        if True:  # the module's browser (one Playwright per process)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            settle(page)
            assert page.get_by_text("No study yet").count() >= 1
            t0 = time.time()
            page.get_by_role("button", name="Run the default study (first look, then 200 items)").click()
            first = cache / "workspaces" / "default-world-facts-n24-s0"
            rec_path = first / ".metacog-jobs" / "study.json"
            # the page stays open on the first look while its study runs; its summary lands first
            t1 = time.time()
            while not (first / "summary.json").exists():
                assert time.time() - t1 < 240, "the first look did not finish"
                time.sleep(0.5)
            first_plots_s = time.time() - t0
            page.goto(f"{url}/Answers_and_confidence?ws={first.name}")
            settle(page)
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 1", timeout=60_000)
            full_screenshot(page, out / "1_first_plots.png")
            assert page.locator('[data-testid="stException"]').count() == 0
            print(f"first plots {first_plots_s:.1f} s after the click (tiny model)")
            # the Playground
            page.goto(f"{url}/Playground?ws={first.name}")
            settle(page)
            page.get_by_label("your question").fill("What is the capital of Kenya?")
            page.get_by_label("accepted answers, comma-separated (optional: grades the reply)").fill("Nairobi")
            page.get_by_role("button", name="Ask", exact=True).click()
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2", timeout=120_000)
            settle(page)
            assert page.get_by_text("Logit lens at the confidence slot").count() >= 1
            assert page.locator('[data-testid="stException"]').count() == 0
            full_screenshot(page, out / "2_playground.png")
            # the lens of one item in the Item explorer
            item = json.loads((first / "summary.json").read_text()) and __import__("pandas").read_parquet(
                first / "items.parquet")["id"].iloc[0]
            page.goto(f"{url}/Item_explorer?ws={first.name}&item={item}")
            settle(page)
            page.get_by_role("button", name="Read the lens").click()
            page.wait_for_function(
                "[...document.querySelectorAll('.js-plotly-plot .gtitle')].some(e => e.textContent.includes('Logit lens'))",
                timeout=120_000)
            settle(page)
            assert page.locator('[data-testid="stException"]').count() == 0
            full_screenshot(page, out / "3_item_lens.png")
            page.close()
    finally:
        if rec_path is not None and rec_path.exists():  # the full study's process outlives the server: end it
            pid = (json.loads(rec_path.read_text()) or {}).get("pid")
            if pid:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    dest = os.environ.get("METACOG_SCREENSHOTS")
    if dest:
        shutil.copytree(out, dest, dirs_exist_ok=True)

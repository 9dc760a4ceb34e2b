"""The demo in a real browser: log in, pick a profile, follow ESAP links, land in JupyterLab.

Each test logs in as its own user (DummyAuthenticator: any name, the demo's password), so
the order of the tests does not matter. What a pod runs with is read back from the
simulator's Kubernetes API (the URL in the demo's banner).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import pytest
from playwright.sync_api import Browser, Page, WebSocket, expect

from esap_spawner.site.profiles import PROFILE_LABEL
from esap_spawner.spawn.objects import workflow_folder
from tests.harness.demo import DemoProcess, processes_under
from tests.harness.esap import esap_deploy

from .conftest import LAB_MS, PAGE_MS, PASSWORD

pytestmark = pytest.mark.e2e

Login = Callable[[str], Page]
OPEN_PROFILES = ["small", "casa", "gammapy"]
# what the progress page's event log shows when a start goes wrong
SPAWN_FAILURE = re.compile(r"Spawn failed|\[Warning\] Error")


def profiles_on_form(page: Page) -> list[str]:
    expect(page.locator("#spawn_form")).to_be_visible()
    return [
        str(label.get_attribute("data-profile"))
        for label in page.locator("label.esap-profile").all()
    ]


def expect_jupyterlab(page: Page, demo: DemoProcess, user: str, *, opens: str = "") -> None:
    """The browser shows a working JupyterLab of ``user``'s server, at its Launcher or, with
    ``opens``, with that file's tab in front.

    Fails as soon as the progress page reports a failed spawn or a container error,
    instead of waiting for the spawner's start timeout."""
    lab = page.locator("#jp-main-dock-panel")
    failed = page.locator(".progress-log-event", has_text=SPAWN_FAILURE)
    expect(lab.or_(failed).first).to_be_attached(timeout=LAB_MS)
    if failed.count():
        log = page.locator("#progress-log").inner_text()
        raise AssertionError(f"{user}'s server did not start; the event log says:\n{log}")
    page.wait_for_url(re.compile(rf"/user/{user}/lab"), timeout=LAB_MS)
    expect(page.locator("#jp-main-dock-panel")).to_be_visible(timeout=LAB_MS)
    if opens:
        tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
        expect(tab).to_contain_text(opens, timeout=LAB_MS)
    else:
        expect(page.locator(".jp-Launcher").first).to_be_visible(timeout=LAB_MS)
    assert page.url.startswith(f"{demo.url}/user/{user}/lab")


def pod_profile(demo: DemoProcess, user: str) -> str:
    pods = demo.pods(user)
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return str(pods[0]["metadata"]["labels"].get(PROFILE_LABEL))


def follow_to_progress_page(page: Page, link: str, user: str, *, confirm: bool = False) -> None:
    """Open a spawn link; the hub answers with the progress page and its event log. A link
    with datasets or a workflow (``confirm``) first shows the prefilled form with its summary,
    and starts nothing until Start is pressed."""
    page.goto(link)
    error = page.locator(".spawn-error-msg")
    assert not error.count(), error.inner_text()
    if confirm:
        expect(page.locator("#esap-confirm")).to_be_visible()
        expect(page).to_have_url(re.compile(r"/hub/spawn\?"))
        page.get_by_role("button", name="Start").click()
    expect(page).to_have_url(re.compile(rf"/hub/spawn-pending/{user}"))
    expect(page.locator("#progress-message")).to_be_visible()
    page.locator("#progress-details summary").click()  # open the event log


def test_login_pick_small_start_lands_in_jupyterlab(login: Login, demo: DemoProcess) -> None:
    page = login("alice")
    assert profiles_on_form(page) == OPEN_PROFILES
    page.check("input[name=profile][value=small]")
    page.get_by_role("button", name="Start").click()

    expect_jupyterlab(page, demo, "alice")
    assert pod_profile(demo, "alice") == "small"
    assert processes_under(demo.workdir), "the server should be a local process of the demo"


def test_esap_deep_link_starts_its_profile_and_shows_progress(
    login: Login, demo: DemoProcess, screenshot_dir: Path
) -> None:
    page = login("bob")
    follow_to_progress_page(page, f"{demo.url}/hub/spawn?profile=gammapy", "bob")
    # the pod exists and runs: its events are on the page while the server starts
    expect(page.locator("#progress-log")).to_contain_text("Started container", timeout=LAB_MS)
    page.screenshot(path=screenshot_dir / "spawn-progress.png")
    assert pod_profile(demo, "bob") == "gammapy"

    expect_jupyterlab(page, demo, "bob")


def test_restricted_profile_hidden_and_refused_by_link(login: Login, demo: DemoProcess) -> None:
    page = login("mallory")
    assert profiles_on_form(page) == OPEN_PROFILES
    expect(page.locator("label.esap-profile[data-profile=gpu]")).to_have_count(0)

    answer = page.goto(f"{demo.url}/hub/spawn?profile=gpu")
    assert answer is not None and answer.status == 403
    expect(page.locator(".spawn-error-msg")).to_contain_text(
        "you may not use the profile 'gpu': it is for members of gpu-users"
    )
    # no server started or pending: the home page offers no Stop, and there is no pod
    page.goto(f"{demo.url}/hub/home")
    expect(page.locator("#start")).to_be_visible()
    expect(page.locator("#stop")).to_be_hidden()
    assert demo.pods("mallory") == []


def test_link_with_unknown_dataset_is_refused_with_the_reason(
    login: Login, demo: DemoProcess
) -> None:
    page = login("heidi")
    answer = page.goto(f"{demo.url}/hub/spawn?profile=casa&dataset=escape:no-such-data")
    assert answer is not None and answer.status == 404
    expect(page.locator(".spawn-error-msg")).to_contain_text(
        "escape:no-such-data does not exist in the data catalogue"
    )
    assert profiles_on_form(page) == OPEN_PROFILES  # the form is back, to correct and start
    page.goto(f"{demo.url}/hub/home")
    expect(page.locator("#stop")).to_be_hidden()
    assert demo.pods("heidi") == []


def test_refused_link_form_keeps_the_links_choices(login: Login, demo: DemoProcess) -> None:
    page = login("ivan")
    page.goto(f"{demo.url}/hub/spawn?profile=casa&dataset=escape:no-such-data")
    expect(page.locator(".spawn-error-msg")).to_be_visible()
    expect(page.locator("input[name=profile][value=casa]")).to_be_checked(timeout=2_000)
    expect(page.locator("#esap-dataset")).to_have_value("escape:no-such-data", timeout=2_000)


def test_group_member_sees_gpu_profile(
    login: Login, demo: DemoProcess, screenshot_dir: Path
) -> None:
    page = login("gpu-user")
    assert profiles_on_form(page) == [*OPEN_PROFILES, "gpu"]
    gpu = page.locator("label.esap-profile[data-profile=gpu]")
    expect(gpu).to_contain_text("1 A100 GPU")
    expect(gpu.locator("input[name=profile]")).to_be_enabled()

    # the form as the README shows it: an astronomer choosing gammapy with a dataset
    page.check("input[name=profile][value=gammapy]")
    page.fill("#esap-dataset", "escape:crab-2020")
    page.screenshot(path=screenshot_dir / "spawn-form.png", full_page=True)


def test_status_page_from_the_services_menu_shows_and_refreshes_availability(
    login: Login, demo: DemoProcess, screenshot_dir: Path
) -> None:
    """The service's page, opened from the hub's Services menu as a user would: it signs the
    browser in through the hub, shows that user's profiles with the API's own figures, and
    refreshes them in place when a server starts."""
    page = login("grace")
    page.goto(f"{demo.url}/hub/home")
    page.get_by_role("button", name="Services").click()
    page.get_by_role("link", name="esap", exact=True).click()
    expect(page).to_have_url(f"{demo.url}/services/esap/")
    expect(page.locator("h1")).to_be_visible()
    rows = page.locator("#profiles tbody tr")
    assert [r.get_attribute("data-profile") for r in rows.all()] == OPEN_PROFILES
    expect(page.locator("header")).to_contain_text("signed in as grace")

    def api_figures() -> dict[str, dict[str, object]]:
        url = f"{demo.url}/services/esap/api/v1/profiles"
        return {
            p["slug"]: p["availability"] for p in demo.get_json(url, demo.portal_token)["profiles"]
        }

    def cells(slug: str) -> list[str]:
        row = page.locator(f'#profiles tr[data-profile="{slug}"] td')
        return [c.strip() for c in row.all_inner_texts()]

    shown = cells("small")
    assert shown[2] == api_figures()["small"]["status"]
    # a server starts elsewhere; without a reload, the page catches up within its refresh
    other = login("heidi")
    other.check("input[name=profile][value=small]")
    other.get_by_role("button", name="Start").click()
    expect_jupyterlab(other, demo, "heidi")
    running = api_figures()["small"]["running"]
    assert isinstance(running, int) and running >= 1
    running_cell = page.locator('#profiles tr[data-profile="small"] td').nth(4)
    expect(running_cell).to_have_text(re.compile(rf"^{running}\b"), timeout=30_000)
    expect(page.locator("#refreshed")).to_contain_text("Refreshed at")
    page.screenshot(path=screenshot_dir / "status-page.png", full_page=True)


# -- features on their way: these become real tests when the marks are removed ----------


def test_form_shows_live_availability(login: Login, demo: DemoProcess) -> None:
    page = login("frank")
    profiles_on_form(page)
    advertised = demo.get_json(f"{demo.url}/services/esap/api/v1/profiles", token=demo.portal_token)
    availability = {p["slug"]: p["availability"] for p in advertised["profiles"]}
    labels = page.locator("label.esap-profile")
    assert labels.count() == len(OPEN_PROFILES)
    for label in labels.all():
        slug = str(label.get_attribute("data-profile"))
        shown = label.locator(".esap-availability")
        expect(shown).to_have_count(1, timeout=2_000)
        text = shown.inner_text().strip()
        radio = label.locator("input[name=profile]")
        if availability[slug]["can_start_now"] == 0:
            assert text == "full", (slug, text)
            expect(radio).to_be_disabled()
        else:
            expected = f"can start now: {availability[slug]['can_start_now']}"
            if availability[slug]["fast_start"]:  # slots on nodes that hold the image
                expected += f" ({availability[slug]['fast_start']} fast)"
            assert text == expected, (slug, text)
            expect(radio).to_be_enabled()


def watch_kernel_channel(page: Page) -> list[object]:
    """The frames the page will receive on kernel channels (``/api/kernels/<id>/channels``)."""
    frames: list[object] = []

    def on_websocket(ws: WebSocket) -> None:
        if "/api/kernels/" in ws.url:
            ws.on("framereceived", lambda frame: frames.append(frame))

    page.on("websocket", on_websocket)
    return frames


def without_workflow(link: str) -> str:
    parts = urlsplit(link)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("opt-workflow", "opt-filepath")]
    return parts._replace(query=urlencode(query)).geturl()


def test_banner_esap_link_with_dataset_starts_and_reports_data(
    login: Login, demo: DemoProcess
) -> None:
    link = without_workflow(demo.banner_value("ESAP link"))
    assert parse_qs(urlsplit(link).query)["opt-dataset"] == ["escape:crab-2020"]
    page = login("carol")
    follow_to_progress_page(page, link, "carol", confirm=True)
    expect(page.locator("#progress-log")).to_contain_text("Datasets ready", timeout=LAB_MS)
    expect_jupyterlab(page, demo, "carol")
    assert pod_profile(demo, "carol") == "gammapy"


def test_dataset_files_are_readable_in_jupyterlab(login: Login, demo: DemoProcess) -> None:
    page = login("erin")
    follow_to_progress_page(
        page, f"{demo.url}/hub/spawn?profile=small&dataset=escape:crab-2020", "erin", confirm=True
    )
    expect_jupyterlab(page, demo, "erin")
    # JupyterLab reads the file through the pod's own server process
    page.goto(f"{demo.url}/user/erin/lab/tree/datasets/escape/crab-2020/README.txt")
    editor = page.locator(".jp-FileEditor .cm-content")
    expect(editor).to_contain_text("Crab nebula gamma-ray events", timeout=LAB_MS)


def test_workflow_opens_at_its_file_with_staged_data(login: Login, demo: DemoProcess) -> None:
    """The banner's ESAP link (gammapy, escape:crab-2020, the demo's workflow and its
    notebook) plus, with the local Rucio server, the banner's staging dataset (only on
    REMOTE_ARCHIVE; transfers emulated by the demo): the progress page shows the staging, the
    server opens at the workflow's notebook, running it in the pod's kernel prints the
    dataset's rows, and the staged files are readable through the pod's server."""
    link = demo.banner_value("ESAP link")
    query = parse_qs(urlsplit(link).query)
    assert "opt-workflow" in query and "opt-filepath" in query, link
    folder = workflow_folder(query["opt-workflow"][0])
    filepath = query["opt-filepath"][0]
    staged = ""
    if "Staging:" in demo.banner:
        [staged] = parse_qs(urlsplit(demo.banner_value("Staging")).query)["opt-dataset"]
        assert staged == "escape:cta-sim-2024"
        link += "&" + urlencode({"opt-dataset": staged})
    page = login("grace")
    kernel_frames = watch_kernel_channel(page)
    follow_to_progress_page(page, link, "grace", confirm=True)
    if staged:
        expect(page.locator("#progress-log")).to_contain_text(f"Staging {staged}", timeout=LAB_MS)
    expect_jupyterlab(page, demo, "grace", opens=Path(filepath).name)
    # JupyterHub hands the spawn's query string on to the server's URL; the path is the file's
    assert urlsplit(page.url).path == f"/user/grace/lab/tree/{folder}/{filepath}", page.url
    # JupyterLab starts the notebook's kernel (a process of the pod) itself. Its indicator
    # reads "idle" before the kernel's channel is open, and a Run All then runs nothing: wait
    # for the kernel's first message on the channel instead.
    deadline = time.monotonic() + LAB_MS / 1000
    while not kernel_frames:
        assert time.monotonic() < deadline, "the notebook's kernel channel never answered"
        page.wait_for_timeout(100)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    outputs = page.locator(".jp-Notebook .jp-OutputArea-output")
    expect(outputs.filter(has_text="'ra': '83.63'")).to_have_count(1, timeout=LAB_MS)
    expect(outputs.filter(has_text="escape:crab-2020")).to_have_count(1)
    if staged:
        page.goto(
            f"{demo.url}/user/grace/lab/tree/datasets/escape/cta-sim-2024/cta-sim-2024.README.txt"
        )
        editor = page.locator(".jp-FileEditor .cm-content")
        expect(editor).to_contain_text("Simulated CTA gamma-ray events", timeout=LAB_MS)


def test_esap_deploy_button_lands_in_jupyterlab_after_the_users_yes(
    demo: DemoProcess, browser: Browser, screenshot_dir: Path
) -> None:
    """ESAP's unchanged Deploy link (its f-string, replicated here) -> the hub's login ->
    the prefilled form with the summary, no server yet -> Start -> JupyterLab at the
    workflow's notebook, checked out at the default branch the service looked up."""
    workflow = demo.banner_value("Workflow")
    notebook = "notebooks/crab.ipynb"
    facility = demo.get_json(f"{demo.url}/services/esap/api/v1/facility", demo.portal_token)
    deploy = esap_deploy(facility["url"], workflow, "HEAD", notebook)
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    context.set_default_timeout(PAGE_MS)
    try:
        page = context.new_page()
        page.goto(deploy)
        expect(page).to_have_url(re.compile(r"/hub/login\?next="))
        page.fill("#username_input", "judy")
        page.fill("#password_input", PASSWORD)
        page.click("#login_submit")
        confirm = page.locator("#esap-confirm")
        expect(confirm).to_be_visible()
        expect(confirm).to_contain_text(workflow)
        expect(confirm).to_contain_text(notebook)
        expect(page.locator("#esap-confirm-ref")).to_have_text("main")  # HEAD, looked up
        expect(page.locator("#esap-workflow")).to_have_value(workflow)
        expect(page.locator("#esap-ref")).to_have_value("main")
        expect(page.locator("button[type=submit]")).to_have_count(1)
        page.screenshot(path=screenshot_dir / "spawn-confirm.png", full_page=True)
        assert demo.pods("judy") == []  # the link alone started nothing
        page.get_by_role("button", name="Start").click()
        expect_jupyterlab(page, demo, "judy", opens=Path(notebook).name)
        folder = workflow_folder(workflow)
        assert urlsplit(page.url).path == f"/user/judy/lab/tree/{folder}/{notebook}", page.url
    finally:
        context.close()

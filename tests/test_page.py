"""`tlc serve`'s page for people, in a real headless Chromium (Debian's, driven by Playwright):
it names the model, shows a photo's top classes with `tlc predict`'s numbers and its heat map,
shows an error for a file that is not an image and keeps working, asks for the API key, and
loads nothing from another origin."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from .conftest import tlc
from .helpers import files_of, predicted, serving

pytestmark = pytest.mark.slow
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    how = "install Debian's Chromium: sudo apt-get install chromium (.ci/run does so in CI)"
    if os.environ.get("CI"):
        pytest.fail(f"no chromium on PATH: {how}")
    pytest.skip(f"the browser tests need Chromium: {how}")


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=BROWSER_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    yield page
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)  # for a person to look at
    context.close()


def test_a_photo_shows_its_classes_and_heat_map_and_a_bad_file_an_error(shapes_run, page, tmp_path):
    from playwright.sync_api import expect

    run, drawn = shapes_run
    photo, other = files_of(drawn, 2)
    expected = predicted(run, [photo, other])
    with serving(run) as (url, _, _):
        page.goto(f"{url}/")
        expect(page.locator("#model")).to_have_text("shapes")
        expect(page.locator("#about")).to_contain_text("3 classes: circle, square, triangle")
        expect(page.locator("#about")).to_contain_text("input 48×48×3")

        page.set_input_files("#file", str(photo))
        expect(page.locator("#heat")).to_be_visible()
        best_class, best = expected[photo.name][0]
        first = page.locator("#classes li").first
        expect(first.locator(".class")).to_have_text(best_class)
        expect(first.locator(".probability")).to_have_text(f"{100 * best:.1f}%")
        assert abs(float(first.locator(".probability").get_attribute("data-probability")) - best) < 1e-5
        assert page.locator("#classes li").count() == 3
        assert page.eval_on_selector("#heat", "img => img.naturalWidth") == 48  # the heat map at the input size
        page.fill("#opacity", "80")
        page.dispatch_event("#opacity", "input")
        assert page.eval_on_selector("#heat", "img => getComputedStyle(img).opacity") == "0.8"
        expect(page.locator("#heat-note")).to_contain_text(f"where the model finds {best_class}")
        page.screenshot(path=str(tmp_path / "classified.png"), full_page=True)

        text = tmp_path / "notes.txt"
        text.write_text("not a photo")
        page.set_input_files("#file", str(text))
        expect(page.locator("#error")).to_contain_text("notes.txt: not a readable image")
        expect(page.locator("#classes li")).to_have_count(0)  # nothing of the earlier photo beside the error
        page.screenshot(path=str(tmp_path / "error.png"), full_page=True)

        page.set_input_files("#file", str(other))  # the page keeps working
        expect(page.locator("#classes li").first.locator(".class")).to_have_text(expected[other.name][0][0])
        expect(page.locator("#error")).to_be_empty()
        expect(page.locator("#heat")).to_be_visible()

        flip = tlc("predict", run, other, "--json", "--tta", "flip")
        flip_class, flip_p = [(t["class"], t["probability"]) for t in json.loads(flip.stdout)[0]["top"]][0]
        page.check("#tta")  # the switch classifies the photo again, averaged with its mirror image
        expect(page.locator("#classes li").first.locator(".probability")).to_have_text(f"{100 * flip_p:.1f}%")
        assert page.locator("#classes li").first.locator(".class").text_content() == flip_class
    outside = [u for u in page.requested if not (u.startswith(url) or u.startswith(("blob:", "data:")))]
    assert outside == [] and any(u.endswith("/explain?overlay=1") for u in page.requested)
    assert any(u.endswith("/predict?top=5&tta=flip") for u in page.requested)


def test_keyboard_opens_the_chooser_and_a_too_large_file_is_refused_on_the_page(shapes_run, page, tmp_path):
    from playwright.sync_api import expect

    run, drawn = shapes_run
    with serving(run, "--max-bytes", "2000") as (url, _, _):
        page.goto(f"{url}/")
        expect(page.locator("#model")).to_have_text("shapes")
        # Enter on the drop zone clicks the file input, which is what opens a browser's chooser
        # (Playwright's file-chooser interception missed that dialog now and then under load)
        page.eval_on_selector("#file", "input => { input.addEventListener('click', (event) => {"
                                       " event.preventDefault(); window.chooserOpened = true; }); }")
        page.focus("#drop")
        page.keyboard.press("Enter")
        assert page.evaluate("window.chooserOpened === true")
        page.evaluate("window.chooserOpened = false")
        page.keyboard.press(" ")  # Space too, as for any button
        assert page.evaluate("window.chooserOpened === true")
        big = tmp_path / "big.png"
        big.write_bytes(files_of(drawn, 1)[0].read_bytes() + b"\0" * 4000)
        page.set_input_files("#file", str(big))
        expect(page.locator("#error")).to_contain_text("this server takes at most 2,000 per request")
        for control in ("#file", "#opacity"):  # every control has a label
            assert page.eval_on_selector(control, "e => e.labels.length") == 1


def test_the_page_asks_for_the_api_key_and_keeps_it_for_the_tab(shapes_run, page):
    from playwright.sync_api import expect

    run, drawn = shapes_run
    photo = files_of(drawn, 1)[0]
    with serving(run, "--api-key-env", "TLC_PAGE_KEY", env={"TLC_PAGE_KEY": "open-sesame"}) as (url, _, _):
        page.goto(f"{url}/")
        expect(page.locator("#key-input")).to_be_visible()
        page.fill("#key-input", "open-sesame")
        page.keyboard.press("Enter")
        expect(page.locator("#model")).to_have_text("shapes")
        page.set_input_files("#file", str(photo))
        expect(page.locator("#heat")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('tlc-api-key')") == "open-sesame"


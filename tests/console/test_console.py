"""The web console in a real headless Chromium against a live gateway with simulators.

The tests run in file order and build on each other (one gateway, one database): sign in,
connections, models and pulls, people and access, keys, health. Each page is saved as a
screenshot at 1280 and 390 pixels wide to docs/console/.
"""

import json
import time
import urllib.error
import urllib.request

import ollama
import pytest
from playwright.sync_api import expect

from conftest import NARROW, WIDE

USER_EMAIL = "bob@example.com"
USER_PASSWORD = "bob-password-123"
GROUP = "analysts"

state = {}


def sign_in(browser, url, email, password, viewport=WIDE):
    ctx = browser.new_context(viewport=viewport)
    page = ctx.new_page()
    page.goto(f"{url}/console")
    expect(page).to_have_url(f"{url}/console/signin")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    return ctx, page


def shoot(page, shots, name):
    page.screenshot(path=str(shots / f"{name}.png"))


def api(url, path, token, method="GET", body=None):
    req = urllib.request.Request(f"{url}{path}", method=method)
    req.add_header("Authorization", f"Bearer {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, data=data, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def token_of(url, email, password):
    req = urllib.request.Request(
        f"{url}/api/v1/auths/signin",
        data=json.dumps({"email": email, "password": password}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["token"]


@pytest.fixture(scope="module")
def admin_page(browser, url, admin):
    ctx, page = sign_in(browser, url, *admin)
    expect(page).to_have_url(f"{url}/console/fleet")
    yield page
    ctx.close()


def test_sign_in_lands_on_the_fleet(browser, url, admin, shots):
    ctx = browser.new_context(viewport=WIDE)
    page = ctx.new_page()
    page.goto(f"{url}/console/fleet")
    expect(page).to_have_url(f"{url}/console/signin")
    shoot(page, shots, "signin-1280")
    page.fill("input[name=email]", admin[0])
    page.fill("input[name=password]", "wrong-password")
    page.click("button[type=submit]")
    expect(page.locator("p.error")).to_be_visible()
    page.fill("input[name=password]", admin[1])
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{url}/console/fleet")
    expect(page.locator("#fleet tbody tr[data-instance='0'] [data-health]")).to_have_text("healthy")
    ctx.close()


def test_a_bad_url_is_refused_at_the_field_and_nothing_is_saved(admin_page, url, shots):
    page = admin_page
    page.goto(f"{url}/console/connections")
    rows = page.locator("#connections tbody tr").count()
    form = page.locator("#add-connection")
    form.locator("input[name=url]").fill("ftp://not a url")
    form.locator("input[name=weight]").fill("2")
    form.locator("button[type=submit]").click()
    error = page.locator("#add-connection #error-url")
    expect(error).to_be_visible()
    # The error sits with the URL field, and what was typed is kept.
    assert page.locator("#add-connection label:has(input[name=url]) #error-url").count() == 1
    expect(page.locator("#add-connection input[name=weight]")).to_have_value("2")
    shoot(page, shots, "connections-error-1280")
    page.goto(f"{url}/console/connections")
    assert page.locator("#connections tbody tr").count() == rows
    assert "not a url" not in page.content()


def test_add_a_connection_and_verify_it(admin_page, url, sim_b, shots):
    page = admin_page
    _, sim_url = sim_b
    page.goto(f"{url}/console/connections")
    form = page.locator("#add-connection")
    form.locator("input[name=url]").fill(sim_url)
    form.locator("input[name=key]").fill("sk-upstream-secret")
    form.locator("input[name=tags]").fill("gpu, lab")
    form.locator("input[name=weight]").fill("2")
    form.locator("input[name=priority]").fill("0")
    form.locator("input[name=slots]").fill("4")
    form.locator("button[type=submit]").click()
    expect(page.locator("p.note")).to_contain_text("added")
    row = page.locator(f"#connections tbody tr[data-url='{sim_url}']")
    expect(row).to_have_count(1)
    # The key is shown masked, never in clear.
    expect(row).to_contain_text("********")
    assert "sk-upstream-secret" not in page.content()
    row.locator("button", has_text="Verify").click()
    expect(page.locator("p.note")).to_contain_text("verified: Ollama")
    shoot(page, shots, "connections-1280")


def test_its_models_appear(admin_page, url):
    page = admin_page
    page.goto(f"{url}/console/models")
    expect(page.locator("#catalogue tr[data-model^='gemma2']")).to_have_count(1)
    expect(page.locator("#catalogue tr[data-model^='llama3.2']")).to_have_count(1)


def test_pull_to_the_whole_fleet_shows_progress_to_the_end(admin_page, url, shots):
    page = admin_page
    page.goto(f"{url}/console/models")
    form = page.locator("form#pull")
    form.locator("input[name=model]").fill("phi3")
    form.locator("select[name=target]").select_option("all")
    form.locator("button[type=submit]").click()
    expect(page.locator("#pull-progress")).to_be_visible()
    expect(form).to_have_attribute("data-state", "success", timeout=60_000)
    expect(page.locator("#pull-status")).to_contain_text("success")
    assert page.locator("#pull-progress progress").get_attribute("value") == "100"
    # Both instances reported their progress.
    expect(page.locator("#pull-instances li")).to_have_count(2)
    shoot(page, shots, "models-pull-1280")
    page.goto(f"{url}/console/models")
    phi3 = page.locator("#catalogue tr[data-model^='phi3']")
    expect(phi3).to_contain_text("#0")
    expect(phi3).to_contain_text("#1")


def test_a_user_sees_only_the_models_allowed_to_their_group(browser, admin_page, url, shots):
    page = admin_page
    page.goto(f"{url}/console/people")
    form = page.locator("#add-user")
    form.locator("input[name=email]").fill(USER_EMAIL)
    form.locator("input[name=name]").fill("Bob")
    form.locator("input[name=password]").fill(USER_PASSWORD)
    form.locator("select[name=role]").select_option("user")
    form.locator("button[type=submit]").click()
    expect(page.locator("p.note")).to_contain_text("created")
    page.locator("#add-group input[name=name]").fill(GROUP)
    page.locator("#add-group button[type=submit]").click()
    group = page.locator(f"form.group[data-group='{GROUP}']")
    expect(group).to_have_count(1)
    group.locator("label", has_text=USER_EMAIL).locator("input").check()
    group.locator("button[type=submit]").click()
    expect(page.locator("p.note")).to_contain_text("saved")
    # The first admin cannot be deleted or demoted from here.
    first = page.locator("#users tr", has_text="first admin")
    expect(first.locator("button", has_text="Delete")).to_have_count(0)
    shoot(page, shots, "people-1280")

    # llama3.2 to the group only; gemma2 to nobody but admins.
    for model, groups in (("llama3.2:latest", [GROUP]), ("gemma2:latest", [])):
        page.goto(f"{url}/console/models/record?id={model}")
        record = page.locator("form#record")
        record.locator("input[name=access][value=restricted]").check()
        for name in groups:
            record.locator("label", has_text=f"group {name}").locator("input").check()
        record.locator("button[type=submit]").click()
        expect(page.locator("p.note")).to_contain_text("saved")
    expect(page.locator("#records tr[data-record='llama3.2:latest']")).to_contain_text(GROUP)

    ctx, user = sign_in(browser, url, USER_EMAIL, USER_PASSWORD)
    expect(user).to_have_url(f"{url}/console/my-models")
    shown = set(user.locator("#my-models tbody tr[data-model]").evaluate_all("rs => rs.map(r => r.dataset.model)"))
    assert "llama3.2:latest" in shown
    assert "gemma2:latest" not in shown
    # Exactly what the API lists for this user.
    token = token_of(url, USER_EMAIL, USER_PASSWORD)
    listed = {m["model"] for m in api(url, "/api/tags", token)["models"]}
    assert shown == listed
    # No admin entry in the user's navigation, and an admin page is refused.
    expect(user.locator("nav a", has_text="Fleet")).to_have_count(0)
    resp = user.goto(f"{url}/console/fleet")
    assert resp.status == 403
    user.goto(f"{url}/console/my-models")
    shoot(user, shots, "my-models-1280")
    state["user_ctx"] = ctx


def test_a_key_is_shown_once_works_with_the_ollama_client_and_stops_when_revoked(browser, url, shots):
    ctx = state["user_ctx"]
    page = ctx.new_page()
    page.goto(f"{url}/console/keys")
    page.locator("#create-key input[name=name]").fill("laptop")
    page.locator("#create-key button[type=submit]").click()
    key = page.locator("#new-key").inner_text().strip()
    assert key.startswith("sk-")
    expect(page.locator("button[data-copy]")).to_be_visible()
    # The picture in the docs shows where the key appears, not a key.
    page.locator("#new-key").evaluate("el => { el.textContent = 'sk-' + '\u2022'.repeat(29); }")
    shoot(page, shots, "keys-created-1280")
    # Shown once: the list shows only its prefix, and it is gone after a reload.
    page.goto(f"{url}/console/keys")
    assert key not in page.content()
    row = page.locator("#keys tr[data-key='laptop']")
    expect(row.locator(".state")).to_have_text("active")

    client = ollama.Client(host=url, headers={"Authorization": f"Bearer {key}"})
    names = {m.model for m in client.list().models}
    assert "llama3.2:latest" in names and "gemma2:latest" not in names
    answer = client.chat(model="llama3.2", messages=[{"role": "user", "content": "Hi"}])
    assert answer.message.content

    page.on("dialog", lambda d: d.accept())
    row.locator("button", has_text="Revoke").click()
    expect(page.locator("p.note")).to_contain_text("revoked")
    expect(page.locator("#keys tr[data-key='laptop'] .state")).to_have_text("revoked")
    with pytest.raises(ollama.ResponseError) as refused:
        client.list()
    assert refused.value.status_code == 401
    shoot(page, shots, "keys-1280")


def until_listed(page, address, locator, text):
    """Reloads `address` until `locator` holds `text` (usage reaches the database within the
    metering's flush interval)."""
    for _ in range(40):
        page.goto(address)
        if text in page.locator(locator).inner_text():
            return
        time.sleep(0.25)
    expect(page.locator(locator)).to_contain_text(text)


def test_usage_pages_show_what_each_used(admin_page, url, shots):
    # The user's chat through their key (the test above) is metered: the admin sees it by
    # model, user and key; the user sees their own, and no other user's.
    page = admin_page
    until_listed(page, f"{url}/console/usage", "table[data-usage=model] tbody", "llama3.2:latest")
    expect(page.locator("table[data-usage=user] tbody")).to_contain_text(USER_EMAIL)
    expect(page.locator("table[data-usage=day] meter")).not_to_have_count(0)
    shoot(page, shots, "usage-1280")
    user = state["user_ctx"].new_page()
    until_listed(user, f"{url}/console/my-usage", "table[data-usage=model] tbody", "llama3.2:latest")
    expect(user.locator("table[data-usage=user]")).to_have_count(0)
    expect(user.locator("#no-limits")).to_be_visible()
    shoot(user, shots, "my-usage-1280")
    assert user.goto(f"{url}/console/usage").status == 403


def test_limits_are_set_at_the_field_enforced_and_removed(browser, admin_page, url, shots):
    page = admin_page
    page.goto(f"{url}/console/limits")
    expect(page.locator("#limits tbody")).to_contain_text("No limit is set.")
    form = page.locator("#set-limits")
    subject = form.locator("select[name=subject] option", has_text=f"user {USER_EMAIL}")
    bob = subject.get_attribute("value")
    # A bad figure is refused at its field, what was typed is kept, and nothing is saved.
    form.locator("select[name=subject]").select_option(bob)
    form.locator("input[name=requests_per_minute]").fill("-3")
    form.locator("input[name=budget_tokens]").fill("1000")
    form.locator("button[type=submit]").click()
    error = page.locator("#set-limits label:has(input[name=requests_per_minute]) #error-requests_per_minute")
    expect(error).to_contain_text("negative")
    # Every wrong field at once: a budget needs its period.
    expect(page.locator("#set-limits #error-budget_period")).to_contain_text("required")
    expect(page.locator("#set-limits input[name=budget_tokens]")).to_have_value("1000")
    shoot(page, shots, "limits-error-1280")
    page.goto(f"{url}/console/limits")
    expect(page.locator("#limits tbody")).to_contain_text("No limit is set.")

    # Two requests a minute and a daily budget for the user.
    form.locator("select[name=subject]").select_option(bob)
    form.locator("input[name=requests_per_minute]").fill("2")
    form.locator("input[name=budget_tokens]").fill("100000")
    form.locator("select[name=budget_period]").select_option("day")
    form.locator("button[type=submit]").click()
    expect(page.locator("p.note")).to_contain_text("saved")
    row = page.locator(f"#limits tbody tr[data-subject='{bob}']")
    expect(row).to_contain_text("100000 tokens a day")
    shoot(page, shots, "limits-set-1280")

    # The user's next requests run into it: refused with 429 within three, and their own
    # page shows the limit.
    user = state["user_ctx"].new_page()
    user.goto(f"{url}/console/keys")
    user.locator("#create-key input[name=name]").fill("script")
    user.locator("#create-key button[type=submit]").click()
    key = user.locator("#new-key").inner_text().strip()
    client = ollama.Client(host=url, headers={"Authorization": f"Bearer {key}"})
    statuses = []
    for _ in range(3):
        try:
            client.chat(model="llama3.2", messages=[{"role": "user", "content": "Hi"}])
            statuses.append(200)
        except ollama.ResponseError as refused:
            statuses.append(refused.status_code)
            break
    assert statuses[-1] == 429, statuses
    user.goto(f"{url}/console/my-usage")
    expect(user.locator("#my-limits")).to_contain_text("requests a minute")
    expect(user.locator("#my-limits")).to_contain_text("token budget")
    assert user.goto(f"{url}/console/limits").status == 403

    # Removed: the user's requests go through again.
    page.on("dialog", lambda d: d.accept())
    row.locator("button", has_text="Remove").click()
    expect(page.locator("p.note")).to_contain_text("removed")
    expect(page.locator(f"#limits tbody tr[data-subject='{bob}']")).to_have_count(0)
    assert client.chat(model="llama3.2", messages=[{"role": "user", "content": "Hi"}]).message.content


def test_a_killed_instance_shows_on_the_fleet_page(admin_page, url, sim_b, shots):
    page = admin_page
    proc, _ = sim_b
    page.goto(f"{url}/console/fleet")
    health = page.locator("#fleet tbody tr[data-instance='1'] [data-health]")
    expect(health).to_have_text("healthy")
    shoot(page, shots, "fleet-1280")
    interval = float(page.locator("[data-health-interval]").get_attribute("data-health-interval"))
    proc.kill()
    proc.wait()
    killed = time.monotonic()
    # The page updates itself (no reload), asking every instance at each refresh (every
    # health interval when that is under two seconds): within one interval, plus the
    # second a browser's timer and a refresh may take on a loaded machine.
    expect(health).not_to_have_text("healthy", timeout=(interval + 1) * 1000)
    state["noticed_after"] = time.monotonic() - killed
    print(f"health changed {state['noticed_after']:.1f} s after the kill (interval {interval} s)")
    shoot(page, shots, "fleet-down-1280")


PAGES = ["fleet", "connections", "models", "people", "keys", "my-models", "limits", "usage", "my-usage"]


@pytest.mark.parametrize("viewport,suffix", [(WIDE, "1280"), (NARROW, "390")])
def test_every_page_is_usable_at_both_widths(browser, url, admin, shots, viewport, suffix):
    ctx, page = sign_in(browser, url, *admin, viewport=viewport)
    expect(page).to_have_url(f"{url}/console/fleet")
    for name in PAGES:
        resp = page.goto(f"{url}/console/{name}")
        assert resp.status == 200, name
        expect(page.locator("h1")).to_be_visible()
        # Nothing spills sideways: wide tables scroll inside their own box.
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name} overflows by {overflow}px at {suffix}px"
        shoot(page, shots, f"{name}-{suffix}")
    page.goto(f"{url}/console/models/record?id=llama3.2:latest")
    shoot(page, shots, f"model-record-{suffix}")
    ctx.close()
    if suffix == "390":
        ctx = browser.new_context(viewport=viewport)
        page = ctx.new_page()
        page.goto(f"{url}/console/signin")
        shoot(page, shots, "signin-390")
        ctx.close()

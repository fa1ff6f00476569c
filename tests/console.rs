//! The web console in a real browser: headless Chromium driven over WebDriver (`chromedriver`, fantoccini), a real
//! controller with its embedded broker, and simulated receivers in two communes. Commune A's editor uploads a
//! recording through the page (with its progress bar) and submits it; A's approver approves it; the editor
//! schedules it; the live page shows every receiver of A playing it; the proof-of-play CSV downloads in the
//! browser session; and commune B's staff can neither see nor target commune A.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test` installs them); without them the test says so
//! and passes, unless `LOA_REQUIRE_TOOLS` is set. With `LOA_SCREENSHOTS=DIR` it saves a PNG of each main page
//! there (how `docs/screenshots/` was made).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use fantoccini::{Client, ClientBuilder, Locator};
use loa_firmware_sim::api::ApiClient;
use loa_firmware_sim::fleet::{Fleet, SimReceiver};
use loa_tests::{bulletin_audio, free_port, wait_for, wait_online, BrokerKind, TestController};
use serde_json::json;

const PASSWORD: &str = "mật khẩu đủ dài 2026";

/// `chromedriver` running on a free port; killed on drop.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.exists())
}

async fn driver() -> anyhow::Result<Option<Driver>> {
    let (Some(chromedriver), Some(_)) = (tool("chromedriver"), tool("chromium")) else {
        if std::env::var_os("LOA_REQUIRE_TOOLS").is_some() {
            bail!("chromium and chromedriver are required (apt-get install chromium chromium-driver)");
        }
        eprintln!("SKIPPED: chromium / chromedriver not installed (apt-get install chromium chromium-driver)");
        return Ok(None);
    };
    let port = free_port();
    let child = tokio::process::Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    let status = format!("{url}/status");
    wait_for("chromedriver to answer", Duration::from_secs(20), || {
        let status = status.clone();
        async move { reqwest::get(&status).await.ok()?.status().is_success().then_some(()) }
    })
    .await?;
    Ok(Some(Driver { child, url }))
}

async fn browser(driver: &Driver) -> anyhow::Result<Client> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": tool("chromium").context("chromium")?,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--lang=vi"],
        }),
    );
    // The workspace builds rustls with `ring` and fantoccini's HTTP client with `aws-lc-rs`: with two providers
    // compiled in, rustls cannot pick one by itself. The driver is on localhost over plain HTTP; either would do.
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    Ok(ClientBuilder::rustls()?.capabilities(caps).connect(&driver.url).await?)
}

/// Saves a screenshot of the current page as `name.png` when `LOA_SCREENSHOTS` is set.
async fn shot(c: &Client, name: &str) -> anyhow::Result<()> {
    if let Some(dir) = std::env::var_os("LOA_SCREENSHOTS") {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(Path::new(&dir).join(format!("{name}.png")), c.screenshot().await?)?;
    }
    Ok(())
}

/// The page's visible text (read again if the page changed under the read).
async fn text_of(c: &Client) -> anyhow::Result<String> {
    let mut last = None;
    for _ in 0..5 {
        match c.find(Locator::Css("body")).await {
            Ok(body) => match body.text().await {
                Ok(t) => return Ok(t),
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last.map(anyhow::Error::from).unwrap_or_else(|| anyhow::anyhow!("no page")))
}

/// Clicks `what` and waits until the page that follows has `then`.
async fn click_then(c: &Client, what: Locator<'_>, then: Locator<'_>) -> anyhow::Result<()> {
    c.find(what).await?.click().await?;
    c.wait().at_most(Duration::from_secs(30)).for_element(then).await?;
    Ok(())
}

/// Waits until the browser's URL satisfies `ok`.
async fn wait_url(c: &Client, what: &str, ok: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    wait_for(what, Duration::from_secs(60), || {
        let c = c.clone();
        let ok = &ok;
        async move {
            let u = c.current_url().await.ok()?;
            let s = format!("{}?{}", u.path(), u.query().unwrap_or_default());
            ok(&s).then_some(s)
        }
    })
    .await
}

async fn log_in(c: &Client, base: &str, user: &str) -> anyhow::Result<()> {
    c.goto(&format!("{base}/login")).await?;
    c.find(Locator::Css("input[name=username]")).await?.send_keys(user).await?;
    c.find(Locator::Css("input[name=password]")).await?.send_keys(PASSWORD).await?;
    click_then(c, Locator::Id("login"), Locator::Id("who")).await?;
    let page = text_of(c).await?;
    ensure!(page.contains(user), "not logged in as {user}: {page}");
    Ok(())
}

async fn log_out(c: &Client) -> anyhow::Result<()> {
    click_then(c, Locator::Css("form.who button"), Locator::Id("login")).await?;
    ensure!(c.current_url().await?.path() == "/login", "logout did not land on the login page");
    Ok(())
}

/// Waits until the page at `url` (reloaded every second) shows `what`.
async fn wait_page(c: &Client, url: &str, what: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        c.goto(url).await?;
        let page = c.source().await?;
        if page.contains(what) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{url} never showed {what:?} within {timeout:?}; last page:\n{}", text_of(c).await?);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

struct Town {
    village_a: i64,
    fleet: Fleet,
}

/// A province without quiet hours (the test runs at any hour), communes A and B with a village each, two
/// receivers in A's village and one in B's, and three people.
async fn town(api: &ApiClient, dir: &Path) -> anyhow::Result<Town> {
    let province = api
        .post("/areas", &json!({"name": "Tỉnh Thử", "kind": "province", "quiet_start": "00:00", "quiet_end": "00:00"}))
        .await?["id"]
        .as_i64()
        .context("province id")?;
    let commune_a = api.create_area("Xã Nậm A", "commune", Some(province), None).await?;
    let commune_b = api.create_area("Xã Pá B", "commune", Some(province), None).await?;
    let village_a = api.create_area("Bản Nà Một", "village", Some(commune_a), Some("vi")).await?;
    let village_b = api.create_area("Bản Khe Hai", "village", Some(commune_b), Some("vi")).await?;
    let mut fleet = Fleet::new();
    let mut ids = Vec::new();
    for (name, area) in [("Loa Nà Một 1", village_a), ("Loa Nà Một 2", village_a), ("Loa Khe Hai", village_b)] {
        let (id, config) = api.register_receiver(name, area).await?;
        fleet.spawn(SimReceiver {
            config_toml: config,
            state_dir: dir.join("state").join(&id),
            wav_dir: None,
            heartbeat_ms: Some(1000),
        })?;
        ids.push(id);
    }
    wait_online(api, &ids, Duration::from_secs(30)).await?;
    for (user, role, area) in
        [("bien-tap-a", "editor", commune_a), ("duyet-a", "approver", commune_a), ("bien-tap-b", "editor", commune_b)]
    {
        api.post("/users", &json!({"username": user, "password": PASSWORD, "role": role, "area_id": area})).await?;
    }
    Ok(Town { village_a, fleet })
}

/// Local wall time `secs` from now, as a `datetime-local` value with seconds.
fn local_in(secs: i64) -> String {
    let t = chrono::Utc::now() + chrono::Duration::seconds(secs);
    t.with_timezone(&chrono_tz::Asia::Ho_Chi_Minh).format("%Y-%m-%dT%H:%M:%S").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_upload_an_approver_approves_receivers_play_and_commune_b_sees_nothing_of_a() -> anyhow::Result<()> {
    loa_tests::init_logs();
    let Some(driver) = driver().await? else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let ctl = TestController::start(&dir.path().join("controller"), BrokerKind::Embedded).await?;
    let api = ctl.api();
    let mut town = town(&api, dir.path()).await?;
    let base = ctl.base.clone();
    let c = browser(&driver).await?;

    // The login page, in Vietnamese by default.
    c.goto(&format!("{base}/")).await?;
    ensure!(c.current_url().await?.path() == "/login");
    ensure!(text_of(&c).await?.contains("Đăng nhập"));
    shot(&c, "login").await?;

    // Commune A's editor uploads a recording (the page's progress bar and XHR) and submits it.
    log_in(&c, &base, "bien-tap-a").await?;
    shot(&c, "dashboard").await?;
    c.goto(&format!("{base}/bulletins")).await?;
    let audio = std::fs::canonicalize(bulletin_audio(dir.path()))?;
    c.find(Locator::Css("form#upload input[name=title]")).await?.send_keys("Lịch tiêm phòng gia súc").await?;
    c.find(Locator::Css("form#upload input[name=file]")).await?.send_keys(audio.to_str().context("path")?).await?;
    shot(&c, "bulletins").await?;
    c.find(Locator::Css("form#upload button")).await?.click().await?;
    let url = wait_for("the upload to land on its bulletin page", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            let u = c.current_url().await.ok()?;
            u.path().starts_with("/bulletins/b-").then(|| u.path().to_string())
        }
    })
    .await?;
    let bulletin = url.trim_start_matches("/bulletins/").to_string();
    wait_page(&c, &format!("{base}{url}"), "<audio", Duration::from_secs(120)).await?;
    c.find(Locator::Id("submit")).await?.click().await?;
    wait_url(&c, "the submit to go through", |u| u.contains("ok=")).await?;
    ensure!(text_of(&c).await?.contains("Chờ duyệt"), "not submitted");
    log_out(&c).await?;

    // A's approver approves it.
    log_in(&c, &base, "duyet-a").await?;
    c.goto(&format!("{base}{url}")).await?;
    c.find(Locator::Id("approve")).await?.click().await?;
    wait_url(&c, "the approval to go through", |u| u.contains("ok=")).await?;
    ensure!(text_of(&c).await?.contains("Đã duyệt"), "not approved");
    shot(&c, "bulletin").await?;
    log_out(&c).await?;

    // The editor schedules it for A's village, 75 s from now (confirming if that happens to be at night).
    log_in(&c, &base, "bien-tap-a").await?;
    c.goto(&format!("{base}/schedules/new?bulletin={bulletin}")).await?;
    c.find(Locator::Css(&format!("select[name=area] option[value='{}']", town.village_a))).await?.click().await?;
    let at = local_in(75);
    c.execute("document.querySelector('input[name=at]').value = arguments[0];", vec![json!(at)]).await?;
    shot(&c, "schedule_new").await?;
    c.find(Locator::Id("save")).await?.click().await?;
    let saved = wait_url(&c, "the schedule form to answer", |u| !u.starts_with("/schedules/new")).await?;
    if saved.starts_with("/schedules?") && c.find(Locator::Id("warnings")).await.is_ok() {
        c.find(Locator::Css(&format!("select[name=area] option[value='{}']", town.village_a))).await?.click().await?;
        c.execute("document.querySelector('input[name=at]').value = arguments[0];", vec![json!(at)]).await?;
        c.find(Locator::Id("confirmed")).await?.click().await?;
        c.find(Locator::Id("save")).await?.click().await?;
        wait_url(&c, "the confirmed schedule to be saved", |u| u.starts_with("/schedules/")).await?;
    }
    let live = c.current_url().await?.path().to_string();
    ensure!(live.starts_with("/schedules/"), "not saved: {}", text_of(&c).await?);

    // The live page shows both of A's receivers playing it, and nobody in B.
    wait_page(&c, &format!("{base}{live}"), "<b id=\"count-played\">2</b>", Duration::from_secs(240)).await?;
    let page = text_of(&c).await?;
    ensure!(page.contains("Loa Nà Một 1") && !page.contains("Loa Khe Hai"), "{page}");
    shot(&c, "broadcast").await?;
    c.goto(&format!("{base}/receivers")).await?;
    shot(&c, "receivers").await?;
    // On a phone's screen the same live page still shows who played it.
    c.set_window_size(390, 844).await?;
    c.goto(&format!("{base}{live}")).await?;
    ensure!(text_of(&c).await?.contains("Loa Nà Một 2"), "the live page on a phone");
    shot(&c, "broadcast-phone").await?;
    c.set_window_size(1280, 1000).await?;

    // Proof of play: on screen, and the CSV as the browser downloads it.
    let today = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Ho_Chi_Minh).date_naive();
    c.goto(&format!("{base}/reports?from={today}&to={today}")).await?;
    shot(&c, "reports").await?;
    let href = c.find(Locator::Id("csv")).await?.attr("href").await?.context("CSV link")?;
    let csv = c
        .execute_async(
            "const done = arguments[arguments.length - 1]; fetch(arguments[0]).then(r => r.text()).then(done);",
            vec![json!(href)],
        )
        .await?;
    let csv = csv.as_str().context("CSV text")?;
    ensure!(csv.contains("Lịch tiêm phòng gia súc") && csv.contains("Loa Nà Một 2"), "CSV:\n{csv}");
    log_out(&c).await?;

    // Commune B's editor sees nothing of A and cannot target it, even with a tampered form.
    log_in(&c, &base, "bien-tap-b").await?;
    c.goto(&format!("{base}/receivers")).await?;
    let page = text_of(&c).await?;
    ensure!(page.contains("Loa Khe Hai") && !page.contains("Loa Nà Một"), "B sees A's receivers: {page}");
    c.goto(&format!("{base}{url}")).await?;
    ensure!(!text_of(&c).await?.contains("Lịch tiêm phòng gia súc"), "B sees A's bulletin");
    c.goto(&format!("{base}/schedules/new")).await?;
    ensure!(!c.source().await?.contains("Bản Nà Một"), "B is offered A's village");
    let before = api.get("/schedules").await?.as_array().map_or(0, Vec::len);
    c.execute(
        "const s = document.querySelector('select[name=bulletin_id]');
         s.add(new Option('x', arguments[0])); s.value = arguments[0];
         const a = document.querySelector('select[name=area]');
         a.add(new Option('x', String(arguments[1]))); a.value = String(arguments[1]);
         document.querySelector('input[name=at]').value = arguments[2];",
        vec![json!(bulletin), json!(town.village_a), json!(local_in(3600))],
    )
    .await?;
    click_then(&c, Locator::Id("save"), Locator::Id("warnings")).await?;
    ensure!(api.get("/schedules").await?.as_array().map_or(0, Vec::len) == before, "B scheduled something for A");

    c.close().await?;
    town.fleet.shutdown().await;
    ctl.stop().await?;
    Ok(())
}

//! The dashboard in a real browser: Debian's Chromium driven through ChromeDriver (the W3C
//! WebDriver protocol, spoken here over plain HTTP), against a real host serving real models.
//! `modelyard setup --browser` installs both; without them the test fails naming that step.
//! Screenshots land in `target/test-artifacts/` (ignored by git).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use modelyard::cli::setup;
use serde_json::{Value, json};

use crate::demo::{TestHost, answers, demo, free_port, llama_model, serial, settings, state_of};

const CHROMIUM: &str = setup::BROWSER_PACKAGES[0].1;
const CHROMEDRIVER: &str = setup::BROWSER_PACKAGES[1].1;
/// W3C WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const ADMIN_KEY: &str = "dashboard-admin-key";
/// What the page says of its connection and its last action, for a failed expectation.
const STATUS: &str =
    "[...document.querySelectorAll('[role=status]')].map(e => e.textContent).join(' | ')";

/// One ChromeDriver process and one headless Chromium session; both end on drop.
struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).is_file(),
                "{path} is missing: run `modelyard setup --browser` (it installs Debian's \
                 {package} package with apt-get)"
            );
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        assert!(
            answers(&http, &format!("{root}/status"), Duration::from_secs(10)).await,
            "chromedriver never answered on {root}"
        );
        let profile = tempfile::tempdir().unwrap();
        // The flags this machine's closed network needs (no background connections).
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let session: Value = http
            .post(format!("{root}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            }}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_string();
        Browser {
            driver,
            base: format!("{root}/session/{id}"),
            http,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"))
    }

    /// A WebDriver command; `Err` carries the driver's error.
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if v["value"]["error"].is_string() {
            return Err(v["value"].clone());
        }
        Ok(v["value"].clone())
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn open(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    async fn size(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({"width": width, "height": height}))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        v[ELEMENT].as_str().unwrap().to_string()
    }

    /// Clicks what `css` finds; when the page redraws it between the finding and the click
    /// (the live panels do), finds it again.
    async fn click(&self, css: &str) {
        for _ in 0..10 {
            let e = self.find(css).await;
            let path = format!("/element/{e}/click");
            match self
                .try_call(reqwest::Method::POST, &path, Some(json!({})))
                .await
            {
                Ok(_) => return,
                Err(e) if e["error"] == "stale element reference" => continue,
                Err(e) => panic!("webdriver {path}: {e}"),
            }
        }
        panic!("{css} kept being redrawn under the click");
    }

    /// Replaces the text of what `css` finds, finding it again if the page redraws it.
    async fn type_into(&self, css: &str, text: &str) {
        for _ in 0..10 {
            let e = self.find(css).await;
            let steps = [("clear", json!({})), ("value", json!({"text": text}))];
            let mut stale = false;
            for (verb, body) in steps {
                let path = format!("/element/{e}/{verb}");
                match self
                    .try_call(reqwest::Method::POST, &path, Some(body))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e["error"] == "stale element reference" => {
                        stale = true;
                        break;
                    }
                    Err(e) => panic!("webdriver {path}: {e}"),
                }
            }
            if !stale {
                return;
            }
        }
        panic!("{css} kept being redrawn under the typing");
    }

    async fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
            .await
    }

    /// Polls `script` (a JavaScript expression) until it is true, for up to `within`.
    async fn until(&self, within: Duration, script: &str) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let expr = format!("return !!({script});");
        while tokio::time::Instant::now() < deadline {
            if self.js(&expr).await == Value::Bool(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Waits for `script` (a JavaScript expression) to hold; fails with the page's `why` (a
    /// JavaScript expression) if it does not within `within`.
    async fn expect(&self, within: Duration, script: &str, why: &str) {
        if !self.until(within, script).await {
            panic!("never held: {script}\npage says: {}", self.text(why).await);
        }
    }

    async fn text(&self, script: &str) -> String {
        self.js(&format!("return String({script});"))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("dashboard-{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Browser {
    /// Ends the session (Chromium quits), then the driver.
    async fn quit(mut self) {
        let _ = self.http.delete(&self.base).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The state the page shows for `model`.
fn row_state(model: &str) -> String {
    format!("(document.querySelector('tr[data-model=\"{model}\"] td.state')?.textContent ?? '')")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_state_and_its_controls_work_in_a_real_browser() {
    let _serial = serial();
    let d = demo();
    let host = TestHost::start(settings(&format!(
        "[auth]\nadmin_key = \"{ADMIN_KEY}\"\n{}{}",
        llama_model("alpha", &d.smollm2, "parallel = 2"),
        llama_model("beta", &d.smollm2, "")
    )))
    .await;
    // Behind the admin key: without it, /ui answers 401 and asks the browser for it.
    for (auth, status) in [
        (None, 401),
        (Some(format!("x:wrong-{ADMIN_KEY}")), 401),
        (Some(format!("admin:{ADMIN_KEY}")), 200),
    ] {
        let mut req = host.http.get(host.url("/ui"));
        if let Some(a) = &auth {
            use base64::Engine as _;
            let a = base64::engine::general_purpose::STANDARD.encode(a);
            req = req.header("authorization", format!("Basic {a}"));
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status, "{auth:?}");
        if status == 401 {
            assert!(
                resp.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Basic ")
            );
        }
    }
    let browser = Browser::start().await;
    browser.size(1280, 800).await;
    // What a browser sends once its user answers the prompt; the page's own requests carry it.
    let with_key = host
        .url("/ui")
        .replacen("http://", &format!("http://admin:{ADMIN_KEY}@"), 1);
    browser.open(&with_key).await;
    browser
        .expect(
            Duration::from_secs(10),
            "document.querySelectorAll('#models tbody tr').length === 2",
            "document.getElementById('connection').textContent",
        )
        .await;
    // A wrong key typed into the page is refused, the right one accepted.
    browser.type_into("#admin-key", "wrong").await;
    browser.click("#keys button[type=submit]").await;
    browser
        .expect(
            Duration::from_secs(10),
            "document.getElementById('connection').textContent.includes('401')",
            STATUS,
        )
        .await;
    browser.type_into("#admin-key", ADMIN_KEY).await;
    browser.click("#keys button[type=submit]").await;
    browser
        .expect(
            Duration::from_secs(10),
            "document.getElementById('connection').textContent === 'live'",
            STATUS,
        )
        .await;

    // The table says what /admin/models says.
    let listed = browser
        .js("return [...document.querySelectorAll('#models tbody tr')].map(r => r.dataset.model);")
        .await;
    let ids: Vec<String> = host.status().models.iter().map(|m| m.id.clone()).collect();
    assert_eq!(listed, json!(ids));

    // A load elsewhere shows up live; the Unload button unloads.
    let (status, _) = host.chat("alpha", 4).await;
    assert_eq!(status, 200);
    browser
        .expect(
            Duration::from_secs(10),
            &format!("{}.startsWith('ready')", row_state("alpha")),
            STATUS,
        )
        .await;
    browser
        .click("tr[data-model=\"alpha\"] button[aria-label=\"Unload alpha\"]")
        .await;
    browser
        .expect(
            Duration::from_secs(20),
            &format!("{}.startsWith('unloaded')", row_state("alpha")),
            &row_state("alpha"),
        )
        .await;
    let st = host.status();
    assert_eq!(state_of(&st, "alpha"), "unloaded", "{:#?}", st.events);
    browser
        .expect(
            Duration::from_secs(10),
            "document.getElementById('events').textContent.includes('loaded alpha')",
            STATUS,
        )
        .await;
    browser.screenshot("desktop").await;

    // A shadow experiment started from the page appears with its arms.
    browser.type_into("#exp-candidate", "lru").await;
    browser.click("#start-experiment button[type=submit]").await;
    browser.expect(Duration::from_secs(20), "document.querySelector('#experiments [data-hook=\"choose-eviction\"]')?.textContent.includes('lru (shadow')", "document.getElementById('experiment-status').textContent").await;
    let running = host
        .get_json_with_key("/admin/experiments", ADMIN_KEY)
        .await;
    assert_eq!(running["experiments"][0]["candidate"], "lru", "{running}");
    assert_eq!(running["experiments"][0]["mode"], "shadow", "{running}");
    // Reweight from its own form, from the keyboard (Enter in the field submits it).
    let weight = "#experiments [data-hook=\"choose-eviction\"] input[type=number]";
    browser.type_into(weight, "0.25\u{E007}").await;
    browser.expect(Duration::from_secs(10), "document.querySelector('#experiments [data-hook=\"choose-eviction\"] h3')?.textContent.includes('weight 0.25')", "document.getElementById('experiment-status').textContent").await;
    let running = host
        .get_json_with_key("/admin/experiments", ADMIN_KEY)
        .await;
    assert_eq!(running["experiments"][0]["weight"], 0.25, "{running}");
    browser
        .click("#experiments [data-hook=\"choose-eviction\"] button[data-action=stop]")
        .await;
    browser
        .expect(
            Duration::from_secs(10),
            "document.getElementById('experiments').textContent.includes('No experiment runs.')",
            STATUS,
        )
        .await;
    let running = host
        .get_json_with_key("/admin/experiments", ADMIN_KEY)
        .await;
    assert_eq!(running["experiments"], json!([]), "stopped: {running}");
    // Started again, then promoted: the candidate serves the hook.
    browser.click("#start-experiment button[type=submit]").await;
    browser
        .expect(
            Duration::from_secs(20),
            "!!document.querySelector('#experiments [data-hook=\"choose-eviction\"] button[data-action=promote]')",
            STATUS,
        )
        .await;
    browser
        .click("#experiments [data-hook=\"choose-eviction\"] button[data-action=promote]")
        .await;
    browser
        .expect(
            Duration::from_secs(10),
            "[...document.querySelectorAll('#policies tbody tr')].some(r => r.textContent.startsWith('choose-eviction') && r.children[1].textContent === 'lru')",
            STATUS,
        )
        .await;
    let policies = host.get_json_with_key("/admin/policies", ADMIN_KEY).await;
    assert_eq!(policies["hooks"][0]["policy"], "lru", "{policies}");

    // The playground streams an answer from the model picked.
    browser
        .expect(
            Duration::from_secs(10),
            "[...document.getElementById('play-model').options].some(o => o.value === 'beta')",
            STATUS,
        )
        .await;
    browser
        .js("const s = document.getElementById('play-model'); s.value = 'beta'; return s.value;")
        .await;
    browser.click("#playground button[type=submit]").await;
    browser
        .expect(
            Duration::from_secs(60),
            "document.getElementById('play-output').dataset.done === 'true'",
            STATUS,
        )
        .await;
    let answer = browser
        .text("document.getElementById('play-output').textContent")
        .await;
    assert!(
        !answer.trim().is_empty() && !answer.starts_with("error"),
        "{answer:?}"
    );
    assert_eq!(state_of(&host.status(), "beta"), "ready");
    // And the Load button loads.
    browser
        .click("tr[data-model=\"alpha\"] button[aria-label=\"Load alpha\"]")
        .await;
    browser
        .expect(
            Duration::from_secs(30),
            &format!("{}.startsWith('ready')", row_state("alpha")),
            STATUS,
        )
        .await;
    assert_eq!(state_of(&host.status(), "alpha"), "ready");

    // Every control has a name a screen reader can say.
    assert_eq!(
        browser
            .js("return [...document.querySelectorAll('input,select,textarea,button')].filter(e => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim())).length;")
            .await,
        json!(0)
    );
    // A phone-width screen scrolls down, never sideways.
    browser.size(390, 844).await;
    browser
        .expect(
            Duration::from_secs(5),
            "document.documentElement.scrollWidth <= window.innerWidth",
            "document.documentElement.scrollWidth + ' > ' + window.innerWidth",
        )
        .await;
    browser.screenshot("phone").await;
    browser.quit().await;
    host.stop().await;
}

/// Regression: a dashboard left open kept `serve` from ever finishing its graceful shutdown
/// (the event stream never ends by itself). The stream now ends when shutdown begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_event_stream_ends_when_the_host_shuts_down() {
    use futures_util::StreamExt as _;
    let host = TestHost::start(settings("[models.m]\nurl = \"http://127.0.0.1:9/v1\"\n")).await;
    let resp = host
        .http
        .get(host.url("/admin/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    let first = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(first.starts_with("event: models\ndata: {"), "{first}");
    let stopped = tokio::time::timeout(Duration::from_secs(10), host.stop()).await;
    assert!(stopped.is_ok(), "the host never finished shutting down");
}

//! Real headless Chromium for the web console's tests, driven over WebDriver.
//!
//! [`Browser::start`] runs Debian's `chromedriver` on a free loopback port (installing
//! `chromium` and `chromium-driver` first with `tests/console/install.sh` when chromedriver is
//! missing) and opens a fresh Chromium session with its own empty profile, headless, with the
//! flags that keep it off the network (no background fetches, no component updates). The
//! helpers wrap fantoccini's client with the few gestures the tests use; each panics with what
//! it was looking for, so a failing test says which step broke. Dropping the browser kills the
//! driver (and with it Chromium).
//!
//! Include it with `#[path = "support/browser.rs"] mod browser;`.

#![allow(dead_code)]

use fantoccini::{Client, ClientBuilder, Locator};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn install_once() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let present = Command::new("chromedriver")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !present {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console/install.sh");
            let status = Command::new("bash").arg(script).status().unwrap();
            assert!(
                status.success(),
                "{script} failed: chromium is needed for the console tests"
            );
        }
    });
}

include!("ports.rs");

impl Browser {
    pub async fn start() -> Browser {
        install_once();
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver (tests/console/install.sh installs it)");
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last = String::new();
        for _ in 0..100 {
            let plain_http = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(plain_http)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        driver,
                        _profile: profile,
                    }
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot open a Chromium session through chromedriver: {last}");
    }

    /// Opens `url` and waits for the page.
    pub async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The path (and query) of the page shown.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Types `text` into the field matched by `css` (cleared first).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no field {css}: {e}"));
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Clicks the element matched by `css` (a button or a link that loads a page) and waits
    /// until the next page has loaded.
    pub async fn click(&self, css: &str) {
        // A mark on the current document: gone once another document has replaced it.
        self.client
            .execute("window.__rosterOldPage = true;", vec![])
            .await
            .unwrap();
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("nothing to click at {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
        for _ in 0..200 {
            let state = self
                .client
                .execute(
                    "return window.__rosterOldPage ? 'old' : document.readyState;",
                    vec![],
                )
                .await;
            if let Ok(serde_json::Value::String(s)) = state {
                if s == "complete" {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("clicking {css} did not load a new page within 10 s");
    }

    /// The visible text of the element matched by `css`.
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// The visible text of the whole page.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// Waits (up to 30 s) until `css` matches something: for pages that reload themselves
    /// while the server is still working (the held run's "planning" page).
    pub async fn wait_for(&self, css: &str) {
        for _ in 0..120 {
            if self.count(css).await > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{css} did not appear within 30 s");
    }

    /// How many elements `css` matches.
    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    /// The value of attribute `name` of the element matched by `css`.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .attr(name)
            .await
            .unwrap()
    }

    /// Chooses the file at `path` in the file input matched by `css`.
    pub async fn choose_file(&self, css: &str, path: &Path) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no file input {css}: {e}"))
            .send_keys(&path.display().to_string())
            .await
            .unwrap();
    }

    /// Saves a PNG of the page to `path` (for docs/).
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Saves a PNG of the page as `<name>.png` in the folder `ROSTER_SCREENSHOTS` names (how
    /// the pictures in docs/console/ are made); nothing without it.
    pub async fn screenshot_for_docs(&self, name: &str) {
        if let Some(dir) = std::env::var_os("ROSTER_SCREENSHOTS") {
            std::fs::create_dir_all(&dir).unwrap();
            self.screenshot(&Path::new(&dir).join(format!("{name}.png")))
                .await;
        }
    }

    /// Ends the session and the driver.
    pub async fn stop(mut self) {
        let _ = self.client.clone().close().await;
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

//! Config problems do not print the credentials in webhook and SCIM push URLs (review s30, F6):
//! the real `roster check-config` on a real file with a duplicate webhook URL, a duplicate SCIM
//! push URL and a bad URL, each carrying a user:password and a query token. The same sentences
//! are what a rejected reload logs.

use std::process::Command;

const SECRETS: [&str; 4] = ["hookpass", "hooktoken", "pushpass", "pushtoken"];

#[test]
fn config_problems_hide_url_credentials_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let hash = "password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0XSsfOIUbEVJFH1EkHwIqJ5NV+nZFzs1OHp9Fk1dcWs\"";
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let hook = "https://bob:hookpass@hooks.example/in?token=hooktoken";
    let push = "https://ann:pushpass@app.example/scim/v2?key=pushtoken";
    let text = format!(
        "[server]\ndata_dir = \"{d}/data\"\nhost_keys = \"{d}/hk\"\n\n\
         [[tenants]]\nid = \"a\"\n{hash}\n\
         [[tenants.webhooks]]\nurl = \"{hook}\"\nsecret = \"{secret}\"\n\
         [[tenants.webhooks]]\nurl = \"{hook}\"\nsecret = \"{secret}\"\n\
         [[tenants.webhooks]]\nurl = \"ftp://carl:hookpass@files.example/?t=hooktoken\"\nsecret = \"{secret}\"\n\
         [tenants.scim_push]\nurl = \"{push}\"\ntoken = \"t\"\n\n\
         [[tenants]]\nid = \"b\"\n{hash}\n[tenants.scim_push]\nurl = \"{push}\"\ntoken = \"t\"\n\n\
         [[tenants]]\nid = \"c\"\n{hash}\n[tenants.scim_push]\nurl = \"ftp://carl:pushpass@app.example/scim?k=pushtoken\"\ntoken = \"t\"\n",
        d = dir.path().display()
    );
    let path = dir.path().join("roster.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args(["-c", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("is listed twice"), "{said}");
    assert!(said.contains("is tenant \"a\"'s too"), "{said}");
    assert!(said.contains("must start with http"), "{said}");
    assert!(said.contains("https://***@hooks.example/in?***"), "{said}");
    for s in SECRETS {
        assert!(!said.contains(s), "{s} shown: {said}");
    }
}

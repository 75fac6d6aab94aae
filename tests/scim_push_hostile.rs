//! SCIM push against applications that misbehave (review s15): a `url` that redirects, a
//! provider whose paging never moves on, an application user that another source provisioned.
//! The application is `scim2-server` (tests/scim_push/), or, for what it cannot do, a small
//! HTTP server in front of it or on its own (tests/scim_push/hostile.rs).

#[path = "scim_push/hostile.rs"]
mod hostile;
#[path = "scim_push/mem.rs"]
mod mem;
#[path = "scim_push/server.rs"]
mod server;

use chrono::Utc;
use hostile::{Answer, Hostile};
use mem::{config_for, create, MemSource};
use roster::config::ScimOnMissing;
use roster::deliver::scim_push::{Batch, ChangeSource, Pusher};
use server::ScimServer;

/// Review s15 F3: a redirect is not followed (ureq would turn the POST into a GET that
/// "succeeds" and drop the token); the push holds with an error naming the Location.
#[test]
fn a_redirect_is_a_failure_naming_its_location_and_nothing_counts_as_done() {
    let s = ScimServer::start(&[]);
    let target = s.base.clone();
    let moved = Hostile::start(move |_, path| Answer {
        status: 301,
        headers: vec![("Location".into(), format!("{target}{path}"))],
        body: String::new(),
    });
    let src = MemSource::default();
    create(&src, "ann", "Ann");
    let p = Pusher::new(
        "t-redirect",
        &config_for(&moved.base, ScimOnMissing::Deactivate),
    )
    .unwrap();
    let b = p.run_batch(&src, Utc::now()).unwrap();
    assert!(
        matches!(
            b,
            Batch::Pushed {
                pushed: 0,
                position: 0,
                ..
            }
        ),
        "{b:?}"
    );
    let c = src.cursor().unwrap();
    let err = c.last_error.unwrap_or_default();
    assert!(
        err.contains(&format!("redirected to {}/Users", s.base)) && err.contains("fix `url`"),
        "{err}"
    );
    assert!(c.next_attempt.is_some(), "the push waits and tries again");
    assert!(s.users().is_empty(), "{:?}", s.users());
    assert!(moved.seen().iter().all(|r| r.starts_with("GET ")));
}

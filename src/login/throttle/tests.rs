use super::*;

#[test]
fn blocks_after_max_failures_and_expires() {
    let th = LoginThrottle::default();
    let policy = ThrottlePolicy {
        max_failures: 3,
        block_for: Duration::from_millis(200),
    };
    let addr: IpAddr = "127.0.0.9".parse().unwrap();
    assert_eq!(th.gate(Some(addr), Some("acme")), Gate::Open);
    for _ in 0..3 {
        th.failed(policy, Some(addr), "acme");
    }
    assert!(matches!(th.gate(Some(addr), None), Gate::Blocked(_)));
    assert!(matches!(th.gate(None, Some("acme")), Gate::Blocked(_)));
    assert_eq!(th.gate(None, Some("other")), Gate::Open);
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(th.gate(Some(addr), Some("acme")), Gate::Open);
}

#[test]
fn a_login_clears_only_failures_against_its_own_tenant() {
    let th = LoginThrottle::default();
    let policy = ThrottlePolicy {
        max_failures: 3,
        block_for: Duration::from_secs(60),
    };
    let addr = IpAddr::from([127, 0, 0, 9]);
    th.failed(policy, Some(addr), "beta");
    th.failed(policy, Some(addr), "beta");
    th.succeeded(Some(addr), "acme");
    th.failed(policy, Some(addr), "gamma");
    assert!(matches!(th.gate(Some(addr), None), Gate::Blocked(_)));

    let other = IpAddr::from([127, 0, 0, 10]);
    th.failed(policy, Some(other), "beta");
    th.failed(policy, Some(other), "beta");
    th.succeeded(Some(other), "beta");
    th.failed(policy, Some(other), "gamma");
    assert_eq!(th.gate(Some(other), None), Gate::Open);
}

/// 20 concurrent wrong passwords from one address: only `max_failures` are checked; the
/// others wait for a turn and then find the address blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attempts_get_at_most_max_failures_checks() {
    let th = LoginThrottle::default();
    let policy = ThrottlePolicy {
        max_failures: 3,
        block_for: Duration::from_secs(60),
    };
    let addr = IpAddr::from([127, 0, 0, 9]);
    let checked = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (th, checked) = (th.clone(), checked.clone());
        tasks.push(tokio::spawn(async move {
            match th.begin(policy, Some(addr), Some("acme")).await {
                Ok(attempt) => {
                    checked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    attempt.failed().await;
                    true
                }
                Err(Refusal::Blocked(_)) => false,
                Err(Refusal::Busy(why)) => panic!("waited out its turn: {why}"),
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(checked.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert!(matches!(th.gate(Some(addr), None), Gate::Blocked(_)));
    // Against the tenant too, from another address.
    let other = IpAddr::from([127, 0, 0, 10]);
    assert!(matches!(
        th.begin(policy, Some(other), Some("acme")).await,
        Err(Refusal::Blocked(_))
    ));
}

/// A success gives its turn to a waiting attempt and counts no failure; an attempt dropped
/// during its check (the client went away) counts as a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_attempts_give_their_turn_to_waiting_ones() {
    let th = LoginThrottle::default();
    let policy = ThrottlePolicy {
        max_failures: 2,
        block_for: Duration::from_secs(60),
    };
    let addr = IpAddr::from([127, 0, 0, 11]);
    let first = th.begin(policy, Some(addr), Some("acme")).await.unwrap();
    let second = th.begin(policy, Some(addr), Some("beta")).await.unwrap();
    let waiting = tokio::spawn({
        let th = th.clone();
        async move {
            let attempt = th.begin(policy, Some(addr), Some("acme")).await.ok()?;
            attempt.succeeded();
            Some(())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "two in flight: a third waits");
    first.succeeded();
    assert!(
        waiting.await.unwrap().is_some(),
        "the success gave its turn"
    );
    assert_eq!(th.gate(Some(addr), None), Gate::Open, "no failure so far");
    drop(second);
    let t = th.begin(policy, Some(addr), Some("gamma")).await.unwrap();
    t.failed().await;
    assert!(
        matches!(th.gate(Some(addr), None), Gate::Blocked(_)),
        "the dropped attempt counted: two failures"
    );
}

/// Review of 2026-11-30, F9: a block of i64::MAX seconds used to panic with "overflow when
/// adding duration to instant"; it now blocks for as long as an `Instant` can say.
#[test]
fn a_block_too_long_for_an_instant_blocks_without_a_panic() {
    let th = LoginThrottle::default();
    let policy = ThrottlePolicy {
        max_failures: 2,
        block_for: Duration::from_secs(i64::MAX as u64),
    };
    let addr = IpAddr::from([127, 0, 0, 10]);
    for _ in 0..2 {
        th.failed(policy, Some(addr), "acme");
    }
    assert!(matches!(th.gate(Some(addr), None), Gate::Blocked(_)));
    let now = Instant::now();
    assert!(instant_after(now, Duration::MAX) > now);
}

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

/// Review s24: a dual-stack listener sees an IPv4 client as `::ffff:a.b.c.d`; the throttle
/// keys it as the IPv4 address, so a lift of `a.b.c.d` finds the block (it used to answer "not
/// blocked" and leave it), and the IPv4 listener's failures add to the same count.
#[test]
fn a_mapped_ipv4_address_is_one_key_and_a_lift_finds_it() {
    let th = LoginThrottle::default();
    let policy = ThrottlePolicy {
        max_failures: 3,
        block_for: Duration::from_secs(60),
    };
    let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
    let plain: IpAddr = "203.0.113.9".parse().unwrap();
    th.failed(policy, Some(mapped), "acme");
    th.failed(policy, Some(plain), "beta");
    th.failed(policy, Some(mapped), "gamma");
    assert!(matches!(th.gate(Some(plain), None), Gate::Blocked(_)));
    assert!(matches!(th.gate(None, Some("acme")), Gate::Open));
    let listed = th.local_blocks(10);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].subject, "203.0.113.9");
    assert_eq!(listed[0].failures, 3);
    assert!(th.lift(LoginScope::Address, "203.0.113.9"));
    assert_eq!(th.gate(Some(mapped), None), Gate::Open);
    assert!(th.local_blocks(10).is_empty());
    assert!(
        !th.lift(LoginScope::Address, "203.0.113.9"),
        "nothing left to lift"
    );
    // A lift forgets the failures too: one more failure does not block again.
    th.failed(policy, Some(plain), "acme");
    assert_eq!(th.gate(Some(plain), None), Gate::Open);
}

#[test]
fn a_tenant_lift_leaves_other_tenants_blocked() {
    let th = LoginThrottle::default();
    let policy = ThrottlePolicy {
        max_failures: 2,
        block_for: Duration::from_secs(60),
    };
    for (i, tenant) in ["acme", "acme", "beta", "beta"].iter().enumerate() {
        th.failed(policy, Some(IpAddr::from([10, 0, 0, i as u8])), tenant);
    }
    assert!(th.lift(LoginScope::Tenant, "acme"));
    assert_eq!(th.gate(None, Some("acme")), Gate::Open);
    assert!(matches!(th.gate(None, Some("beta")), Gate::Blocked(_)));
    assert!(!th.lift(LoginScope::Tenant, "nobody"));
    assert!(!th.lift(LoginScope::Address, "not an address"));
}

/// An IPv6 client holds a whole /64: failures from its addresses add up to one block, which
/// any address of that /64 names when lifted; the next /64 is another client.
#[test]
fn ipv6_addresses_count_by_their_64() {
    let th = LoginThrottle::default();
    let policy = ThrottlePolicy {
        max_failures: 3,
        block_for: Duration::from_secs(60),
    };
    let v6 = |s: &str| -> IpAddr { s.parse().unwrap() };
    for one in [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2:ffff:1:2:3",
    ] {
        th.failed(policy, Some(v6(one)), "acme");
    }
    assert!(matches!(
        th.gate(Some(v6("2001:db8:1:2::9")), None),
        Gate::Blocked(_)
    ));
    assert_eq!(th.gate(Some(v6("2001:db8:1:3::1")), None), Gate::Open);
    assert_eq!(th.local_blocks(10)[0].subject, "2001:db8:1:2::");
    assert!(th.lift(LoginScope::Address, "2001:db8:1:2:abcd::7"));
    assert_eq!(th.gate(Some(v6("2001:db8:1:2::1")), None), Gate::Open);
}

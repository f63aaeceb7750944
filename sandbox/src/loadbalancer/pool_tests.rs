use super::*;
use serde_json::{Value, json};

const POOL: Pool = Pool {
    first: Ipv4Addr::new(198, 51, 100, 128),
    last: Ipv4Addr::new(198, 51, 100, 130),
};

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, last)
}

/// A Service `name` (UID `name-uid`), created at second `age` of the day.
fn svc(name: &str, age: u32, spec: Value, status: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "demo", "uid": format!("{name}-uid"),
            "creationTimestamp": format!("2026-01-01T00:00:{age:02}Z")},
        "spec": spec,
        "status": status,
    }))
    .unwrap()
}

fn lb(name: &str, age: u32) -> Service {
    svc(
        name,
        age,
        json!({"type": "LoadBalancer"}),
        json!({"loadBalancer": {}}),
    )
}

fn showing(mut s: Service, addr: Ipv4Addr) -> Service {
    s.status =
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": addr.to_string()}]}}))
            .unwrap();
    s
}

fn k(name: &str) -> Key {
    Key {
        namespace: "demo".into(),
        name: name.into(),
        uid: format!("{name}-uid"),
    }
}

#[test]
fn services_get_the_lowest_free_addresses_in_age_order() {
    let mut a = Allocator::new(POOL);
    let plan = a.plan(&[
        lb("b", 2),
        lb("a", 1),
        svc("c", 3, json!({"type": "ClusterIP"}), json!({})),
    ]);
    assert_eq!(
        plan,
        [
            Action::Assign(k("a"), ip(128)),
            Action::Assign(k("b"), ip(129))
        ]
    );
    // Once the statuses show them, there is nothing more to write.
    let now = [showing(lb("a", 1), ip(128)), showing(lb("b", 2), ip(129))];
    assert_eq!(a.plan(&now), []);
}

#[test]
fn an_address_is_never_handed_out_twice_even_before_statuses_show_it() {
    let mut a = Allocator::new(POOL);
    assert_eq!(a.plan(&[lb("a", 1)]), [Action::Assign(k("a"), ip(128))]);
    // The watch has not shown a's status yet when b arrives: a's write is not made again.
    let plan = a.plan(&[lb("a", 1), lb("b", 2)]);
    assert_eq!(plan, [Action::Assign(k("b"), ip(129))]);
    // Unless it failed.
    a.not_written("a-uid");
    let plan = a.plan(&[lb("a", 1), showing(lb("b", 2), ip(129))]);
    assert_eq!(plan, [Action::Assign(k("a"), ip(128))]);
}

#[test]
fn a_status_changed_by_someone_else_is_written_again() {
    let mut a = Allocator::new(POOL);
    a.plan(&[lb("a", 1)]);
    assert_eq!(a.plan(&[showing(lb("a", 1), ip(128))]), []);
    assert_eq!(
        a.plan(&[showing(lb("a", 1), ip(7))]),
        [Action::Assign(k("a"), ip(128))]
    );
}

#[test]
fn a_full_pool_leaves_the_service_pending_reported_once_until_an_address_frees() {
    let mut a = Allocator::new(POOL);
    let mut all = vec![lb("a", 1), lb("b", 2), lb("c", 3), lb("d", 4)];
    let plan = a.plan(&all);
    assert_eq!(
        plan.last(),
        Some(&Action::Pending(k("d"), Pending::PoolFull(POOL)))
    );
    assert_eq!(a.held("d-uid"), None);
    // Reported once, not on every change.
    let plan = a.plan(&all);
    assert!(
        !plan.iter().any(|p| matches!(p, Action::Pending(..))),
        "{plan:?}"
    );
    // Deleting b frees its address for d.
    all.remove(1);
    let plan = a.plan(&all);
    assert!(plan.contains(&Action::Assign(k("d"), ip(129))), "{plan:?}");
}

#[test]
fn deleting_frees_and_a_new_service_of_the_same_name_is_a_new_claim() {
    let mut a = Allocator::new(POOL);
    a.plan(&[lb("a", 1), lb("b", 2)]);
    let mut again = lb("a", 5);
    again.metadata.uid = Some("a-second-uid".into());
    let plan = a.plan(&[showing(lb("b", 2), ip(129)), again]);
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert!(
        matches!(&plan[0], Action::Assign(key, addr) if key.uid == "a-second-uid" && *addr == ip(128))
    );
}

#[test]
fn addresses_shown_in_statuses_are_taken_back_after_a_restart_oldest_first() {
    let mut a = Allocator::new(POOL);
    // Two Services show .130 (a status written by hand): the older keeps it.
    let plan = a.plan(&[
        showing(lb("young", 9), ip(130)),
        showing(lb("old", 1), ip(130)),
        showing(lb("mid", 5), ip(128)),
    ]);
    assert_eq!(plan, [Action::Assign(k("young"), ip(129))]);
    assert_eq!(a.held("old-uid"), Some(ip(130)));
}

#[test]
fn external_ips_in_the_pool_are_not_handed_out() {
    let mut a = Allocator::new(POOL);
    let ext = svc(
        "ext",
        1,
        json!({"type": "ClusterIP", "externalIPs": ["198.51.100.128"]}),
        json!({}),
    );
    assert_eq!(
        a.plan(&[ext, lb("a", 2)]),
        [Action::Assign(k("a"), ip(129))]
    );
}

#[test]
fn a_requested_address_is_given_when_free_and_explained_when_not() {
    let want = |name: &str, age: u32, addr: &str| {
        svc(
            name,
            age,
            json!({"type": "LoadBalancer", "loadBalancerIP": addr}),
            json!({}),
        )
    };
    let mut a = Allocator::new(POOL);
    let plan = a.plan(&[
        want("a", 1, "198.51.100.130"),
        want("b", 2, "198.51.100.130"),
        want("c", 3, "198.51.100.7"),
        want("d", 4, "fd00::1"),
    ]);
    assert_eq!(
        plan,
        [
            Action::Assign(k("a"), ip(130)),
            Action::Pending(k("b"), Pending::InUse(ip(130))),
            Action::Pending(
                k("c"),
                Pending::OutsidePool {
                    wanted: ip(7),
                    pool: POOL
                }
            ),
            Action::Pending(k("d"), Pending::NotIpv4("fd00::1".into())),
        ]
    );
}

#[test]
fn a_service_that_is_no_longer_a_load_balancer_frees_and_loses_its_address() {
    let mut a = Allocator::new(POOL);
    a.plan(&[lb("a", 1)]);
    let now_cluster_ip = showing(
        svc("a", 1, json!({"type": "ClusterIP"}), json!({})),
        ip(128),
    );
    let plan = a.plan(&[now_cluster_ip, lb("b", 2)]);
    assert_eq!(
        plan,
        [Action::Assign(k("b"), ip(128)), Action::Clear(k("a"))]
    );
}

#[test]
fn services_of_another_class_or_being_deleted_are_left_alone() {
    let mut a = Allocator::new(POOL);
    let other = svc(
        "other",
        1,
        json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb"}),
        json!({}),
    );
    let mut going = lb("going", 2);
    going.metadata.deletion_timestamp = going.metadata.creation_timestamp.clone();
    assert_eq!(a.plan(&[other, going]), []);
}

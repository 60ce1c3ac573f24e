//! The gateway listens only where its configuration says: children's MQTT (`listen`), and, when
//! set, `metrics_listen` and `local_api_listen`; no internal listener on a port the kernel picks.
//! The local API, when configured, authenticates as the hub does.
//!
//! One test in this file: it counts the process's listening sockets (Linux `/proc`), which other
//! tests running alongside would change.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::gateway as support;
use test_support::hub as common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::TestHub;
use hyper::{Method, StatusCode};

/// The TCP ports this process listens on: its socket inodes (`/proc/self/fd`) matched with the
/// listening sockets of `/proc/self/net/tcp{,6}` (state 0A).
fn listening_ports() -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = BTreeSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            if *state == "0A" && inodes.contains(*inode) {
                let port = local.rsplit(':').next().unwrap();
                ports.insert(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

#[tokio::test]
async fn the_gateway_listens_only_where_configured() {
    let t = TestHub::start().await;
    let gw = support::edge_device(&t).await;
    support::child(&t, &gw, "child").await;
    let before = listening_ports();

    let g = support::start(&t, &[]).await;
    let _child = g.connect("child").await; // the gateway is serving
    let opened: Vec<u16> = listening_ports().difference(&before).copied().collect();
    assert_eq!(
        opened,
        vec![g.addr.port()],
        "by default the gateway listens for children only"
    );
    let _ = g.stop.send(true);
    drop(g);

    let api = SocketAddr::from(([127, 0, 0, 1], test_support::net::free_port()));
    let g = support::start_with(&t, &[], |c| c.local_api_listen = Some(api)).await;
    let _child = g.connect("child").await;
    let ports = listening_ports();
    assert!(ports.contains(&api.port()), "local_api_listen is served");
    // It is the hub's API, authenticated against the local registry: it has no shared access
    // policy, so even the hub's owner credential is refused.
    let tls = ferrohub_runtime::tls::client_config(&g.root).unwrap();
    let client = ferrohub_runtime::client::ServiceClient::new(
        api.to_string(),
        common::HOST.into(),
        "iothubowner".into(),
        common::base64_decode(common::KEY),
        tls,
    )
    .with_token_time(u64::try_from(common::now().unix_timestamp()).unwrap());
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        client.send(Method::GET, "/devices/child", None, &[]),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.json());
    let _ = g.stop.send(true);
    println!(
        "RELIABILITY|security: listeners nobody configured|a gateway with one child, the process's listening sockets read from /proc before and after|default config; local_api_listen set|by default only the children's port is added; the local API only where configured, answering 401 to the hub's owner credential|0"
    );
}

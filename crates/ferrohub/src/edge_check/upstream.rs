//! `ferrohub edge check`'s hub checks: its MQTT and HTTPS ports over TLS with the gateway's
//! trust, `$edgeHub`'s authentication (an MQTT CONNECT as the gateway makes it, unless the running
//! gateway's own session shows it), and this machine's clock against the hub's `Date`.

use edge::control::GatewayStatus;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Gw, Token, read_chain};
use crate::checks::Report;

/// Clock skew with the hub above this fails (tokens and certificates are checked against it).
const MAX_SKEW_SECS: i64 = 300;

pub(super) async fn checks(
    gw: &Gw,
    status: Option<&GatewayStatus>,
    now: time::OffsetDateTime,
    r: &mut Report,
) {
    let bundle = match read_chain(&gw.trust) {
        Ok(b) => b,
        Err(e) => {
            r.add(
                "hub-trust",
                false,
                format!("the CAs trusted for the hub: {e}"),
                if gw.identity {
                    "set trust_bundle_cert = \"file:///path/to/root-ca.pem\" in the super-config and \
                     run `ferrohub config apply`"
                        .into()
                } else {
                    format!("set hub_ca in {} to the hub's root CA", gw.path.display())
                },
            );
            return;
        }
    };
    let fix_addr = |what: &str| {
        if gw.identity {
            format!(
                "start the hub or open the network path to it; a gateway started with \
                     --hub-{what} ADDR is checked at that address while it runs"
            )
        } else {
            format!(
                "start the hub or open the network path to it; check hub_{what} in {}",
                gw.path.display()
            )
        }
    };
    let mut reached = [false; 2];
    for (i, (id, addr, what)) in [
        ("hub-mqtt", &gw.hub_mqtt, "mqtt"),
        ("hub-https", &gw.hub_https, "https"),
    ]
    .into_iter()
    .enumerate()
    {
        let tls = device_client::tls_probe::connect(addr, &gw.hub_hostname, &bundle).await;
        reached[i] = tls.is_ok();
        r.add(
            id,
            tls.is_ok(),
            match &tls {
                Ok(_) => format!(
                    "hub {} reachable at {addr} over TLS with {}",
                    gw.hub_hostname,
                    gw.trust.display()
                ),
                Err(e) => e.clone(),
            },
            fix_addr(what),
        );
    }
    if reached[0] {
        authentication(gw, status, r).await;
    }
    if reached[1] {
        skew(gw, &bundle, now, r).await;
    }
}

/// `$edgeHub` authenticates at the hub: the running gateway's session is up, or an MQTT CONNECT
/// made as the gateway makes it is accepted (not tried while the gateway is connected: the hub
/// would replace its session with this one).
async fn authentication(gw: &Gw, status: Option<&GatewayStatus>, r: &mut Report) {
    if let Some(s) = status.filter(|s| s.upstream_connected) {
        r.add(
            "hub-auth",
            true,
            format!(
                "the running gateway's $edgeHub session with {} is connected",
                s.hub
            ),
            String::new(),
        );
        return;
    }
    let fix_key = if gw.identity {
        "the device's identity at the hub changed: `ferrohub system reprovision`, or see          `ferrohub system check`"
            .to_owned()
    } else {
        format!(
            "the $edgeHub key in {} does not match the hub's: rerun `ferrohub edge init` for this              edge device (it reads the key from the hub) and restart the gateway",
            gw.path.display()
        )
    };
    let (token, edge_id) = match make_token(gw).await {
        Ok(t) => t,
        Err(e) => {
            r.add(
                "hub-auth",
                false,
                format!("no $edgeHub token: {e}"),
                fix_key,
            );
            return;
        }
    };
    let link = match ferrohub_runtime::tls::client_config(&gw.trust) {
        Ok(tls) => edge::upstream::HubLink {
            hostname: gw.hub_hostname.clone(),
            addr: gw.hub_mqtt.clone(),
            tls,
            edge_id: edge_id.clone(),
        },
        Err(e) => {
            r.add("hub-auth", false, format!("TLS: {e}"), fix_key);
            return;
        }
    };
    let client = format!("{edge_id}/$edgeHub");
    let connected = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        edge::upstream::connect(&link, &client, false, &token),
    )
    .await
    .unwrap_or(Err(edge::upstream::UpstreamError::Offline));
    r.add(
        "hub-auth",
        connected.is_ok(),
        match &connected {
            Ok(_) => format!("the hub accepts {client} (CONNACK: accepted)"),
            Err(edge::upstream::UpstreamError::Refused { code, .. }) => {
                format!("the hub refuses {client} (CONNACK: {code:?})")
            }
            Err(e) => format!("MQTT CONNECT as {client}: {e}"),
        },
        fix_key,
    );
}

/// A `$edgeHub` SAS token (an hour) and the edge device's id.
async fn make_token(gw: &Gw) -> Result<(String, String), String> {
    let now = crate::clock::now();
    match &gw.token {
        Token::Key(key) => {
            let resource = format!(
                "{}/devices/{}/modules/$edgeHub",
                gw.hub_hostname, gw.edge_id
            );
            let key = iot_auth::sas::decode_key(key).map_err(|e| format!("edge_hub_key: {e}"))?;
            let expiry = u64::try_from(now.unix_timestamp()).unwrap_or(0) + 3600;
            let token = iot_auth::sas::generate_sas_token(&resource, &key, None, expiry);
            Ok((token, gw.edge_id.clone()))
        }
        Token::Keyd(d) => {
            let id = edge::identity_source::edge_identity(d)
                .await
                .map_err(|e| e.to_string())?;
            let clock: ferrohub_runtime::time::SharedClock = std::sync::Arc::new(
                ferrohub_runtime::time::FixedClock(std::sync::Mutex::new(now)),
            );
            let make = edge::identity_source::token_fn(d.keyd.clone(), &id, clock);
            Ok((make().await?, id.device_id))
        }
    }
}

/// The hub's `Date` against this machine's clock.
async fn skew(gw: &Gw, bundle: &[pki::Certificate], now: time::OffsetDateTime, r: &mut Report) {
    let fix = "set the clock (enable NTP: `timedatectl set-ntp true`); tokens and certificates are                checked against the hub's time";
    match hub_date(&gw.hub_https, &gw.hub_hostname, bundle).await {
        Ok(date) => {
            let skew = (now - date).whole_seconds();
            r.add(
                "clock-skew",
                skew.abs() <= MAX_SKEW_SECS,
                format!(
                    "clock skew with the hub: {skew} s (hub {}, here {}; at most {MAX_SKEW_SECS} s)",
                    ferrohub_runtime::time::rfc3339(date),
                    ferrohub_runtime::time::rfc3339(now)
                ),
                fix.into(),
            );
        }
        Err(e) => r.add(
            "clock-skew",
            false,
            format!("cannot read the hub's time from {}: {e}", gw.hub_https),
            "check that hub_https is the hub's HTTPS address".into(),
        ),
    }
}

/// The `Date` header of a `GET /` to the hub's HTTPS port.
async fn hub_date(
    addr: &str,
    name: &str,
    bundle: &[pki::Certificate],
) -> Result<time::OffsetDateTime, String> {
    let mut tls = device_client::tls_probe::connect(addr, name, bundle).await?;
    let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read(&mut buf))
            .await
            .map_err(|_| "no answer within 10 s".to_owned())?
            .map_err(|e| e.to_string())?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buf[..read]);
    }
    let text = String::from_utf8_lossy(&head);
    let date = text
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("date"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .ok_or("the answer has no Date header")?;
    time::OffsetDateTime::parse(&date, &time::format_description::well_known::Rfc2822)
        .map_err(|e| format!("Date {date:?}: {e}"))
}

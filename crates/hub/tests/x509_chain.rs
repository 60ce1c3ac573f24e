//! A CA-signed device that sends its certificate without the intermediate CA is told the chain is
//! incomplete and which issuer is missing, not that its CA is unknown.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as common;

use common::{ClientCert, Mqtt, TestHub, now};
use ferrohub_runtime::etag::IfMatch;
use hub_wire::model::{AuthType, Authentication, Device};
use mqtt_codec::ConnectReturnCode::{Accepted, NotAuthorized};
use pki::{CertRequest, Certificate, KeyAlgorithm, PrivateKey, Profile, Signer};

fn issue(
    profile: Profile,
    cn: &str,
    issuer: Option<&(Certificate, PrivateKey)>,
) -> (Certificate, PrivateKey) {
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let req = CertRequest::new(profile, cn, now() - time::Duration::days(1));
    let signer = issuer.map(|(cert, key)| Signer { cert, key });
    (pki::issue(&req, &key, signer).unwrap(), key)
}

async fn connect(t: &TestHub, id: &str, cert: ClientCert) -> mqtt_codec::ConnectReturnCode {
    let mut c = Mqtt::tls(t, Some(cert)).await;
    c.connect(id, None, true).await.1
}

#[tokio::test]
async fn a_leaf_without_its_intermediate_is_an_incomplete_chain() {
    let t = TestHub::start().await;
    let root = issue(Profile::RootCa, "Chain Root", None);
    let inter = issue(
        Profile::IntermediateCa { path_len: Some(0) },
        "Chain Intermediate",
        Some(&root),
    );
    let leaf = issue(Profile::DeviceClient, "chaindev", Some(&inter));
    t.hub
        .cas
        .upload("chainroot", &root.0.to_pem(), true, &IfMatch::Absent)
        .unwrap();
    let device = Device {
        device_id: "chaindev".into(),
        authentication: Authentication {
            kind: Some(AuthType::CertificateAuthority),
            ..Default::default()
        },
        ..Default::default()
    };
    t.hub
        .registry
        .put_device("chaindev", device, &IfMatch::Absent)
        .unwrap();

    let full = ClientCert::new(&[&leaf.0, &inter.0], &leaf.1);
    assert_eq!(connect(&t, "chaindev", full).await, Accepted);
    let bare = ClientCert::new(&[&leaf.0], &leaf.1);
    assert_eq!(connect(&t, "chaindev", bare).await, NotAuthorized);
    let metrics = t.hub.metrics.render(0);
    assert!(
        metrics.contains("ferrohub_auth_failures_total{reason=\"incomplete_chain\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("reason=\"unknown_ca\""), "{metrics}");
    // The refusal names the leaf's issuer, which the intermediate would have supplied.
    let inter_der = inter.0.to_rustls();
    assert_eq!(
        leaf.0.missing_issuer(&[]).as_deref(),
        Some("CN=Chain Intermediate")
    );
    assert_eq!(leaf.0.missing_issuer(&[inter_der.as_ref()]), None);
}

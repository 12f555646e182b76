//! An OAP behind TLS with a private CA: `caFile` makes it trusted; without it the
//! measurement is an Error (never a value).

use std::net::TcpListener;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use skycanary::analysis::Phase;
use skycanary::sim::OapProfile;

use crate::support::{Sim, apdex, last_message};

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

#[tokio::test]
async fn custom_ca_is_trusted_and_unknown_ca_is_an_error() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = Sim::start(OapProfile::V10_4).await;
    s.constant("service_apdex", "reviews.bookinfo", 9950.0);
    let pki = pki();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
        pki.cert_pem.into_bytes(),
        pki.key_pem.into_bytes(),
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = axum_server::from_tcp_rustls(listener, config).unwrap();
    let router = s.sim.router();
    tokio::spawn(async move {
        let _ = server.serve(router.into_make_service()).await;
    });
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pki.ca_pem).unwrap();
    let address = format!("https://localhost:{port}");
    let defaults = || skycanary::runner::Defaults {
        skywalking: Some(address.clone()),
        timezone: None,
    };

    let trusted = apdex(r#"successCondition: "min(result) >= 9900""#).replace(
        "window: 5m",
        &format!("window: 5m\n        caFile: {}", ca_file.display()),
    );
    let r = s.analyze_with(&trusted, &[], defaults()).await;
    assert_eq!(r.phase, Phase::Successful, "{}", last_message(&r));

    let untrusted = apdex("successCondition: \"true\"\n    consecutiveErrorLimit: 0");
    let r = s.analyze_with(&untrusted, &[], defaults()).await;
    assert_eq!(r.phase, Phase::Error, "{}", last_message(&r));
}

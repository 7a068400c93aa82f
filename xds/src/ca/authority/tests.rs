//! Unit tests of the CA directory: generation and permissions, refusals naming the file, an
//! intermediate under `root.crt`, anchor deduplication, and what a signed leaf contains.

use std::os::unix::fs::PermissionsExt as _;

use rcgen::{CertifiedIssuer, PublicKeyData as _};
use x509_parser::extensions::ParsedExtension;

use super::*;

const ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A self-signed CA as (PEM cert, PEM key, issuer).
fn self_signed(cn: &str) -> (String, String, CertifiedIssuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key");
    let key_pem = key.serialize_pem();
    let issuer = CertifiedIssuer::self_signed(ca_params(cn), key).expect("self-signed");
    (issuer.pem(), key_pem, issuer)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn spki() -> rcgen::SubjectPublicKeyInfo {
    let key = KeyPair::generate().expect("key");
    rcgen::SubjectPublicKeyInfo::from_der(&key.subject_public_key_info()).expect("spki")
}

#[test]
fn generates_an_anchor_in_a_missing_dir_and_reuses_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("nested/ca");
    let (authority, generated) = Authority::open(&dir).expect("generated");
    assert!(generated);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(CA_KEY)), 0o600);

    let anchors = authority.trust_anchors().to_vec();
    assert_eq!(anchors.len(), 1);
    let (_, cert) = X509Certificate::from_der(&anchors[0]).expect("anchor parses");
    assert_eq!(cert.subject().to_string(), "CN=Skiff mesh CA");
    assert_eq!(cert.subject(), cert.issuer());
    let bc = cert
        .basic_constraints()
        .expect("bc")
        .expect("present")
        .value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = cert.key_usage().expect("ku").expect("present").value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert!(
        !cert
            .extensions()
            .iter()
            .any(|e| matches!(e.parsed_extension(), ParsedExtension::NameConstraints(_))),
        "no name constraints"
    );
    let years = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
        / (365 * 24 * 3600);
    assert_eq!(years, 10);
    assert_eq!(
        authority.anchor_expiration(),
        cert.validity().not_after.timestamp()
    );

    let (again, generated) = Authority::open(&dir).expect("reopened");
    assert!(!generated);
    assert_eq!(
        again.trust_anchors(),
        &anchors[..],
        "the same anchor, not a new one"
    );
}

#[test]
fn half_a_ca_is_refused_naming_the_missing_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (cert, _, _) = self_signed("half");
    std::fs::write(tmp.path().join(CA_CERT), cert).expect("write");
    match Authority::open(tmp.path()) {
        Err(CaError::Missing { missing, .. }) => assert_eq!(missing, tmp.path().join(CA_KEY)),
        other => panic!("expected Missing, got {other:?}"),
    }
    assert!(!tmp.path().join(CA_KEY).exists(), "nothing generated");
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (cert, _, _) = self_signed("one");
    let (_, other_key, _) = self_signed("two");
    std::fs::write(tmp.path().join(CA_CERT), cert).expect("write");
    std::fs::write(tmp.path().join(CA_KEY), other_key).expect("write");
    assert!(matches!(
        Authority::load(tmp.path()),
        Err(CaError::KeyMismatch { .. })
    ));
}

#[test]
fn garbage_is_named_by_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, key, _) = self_signed("x");
    std::fs::write(tmp.path().join(CA_KEY), key).expect("write");
    std::fs::write(tmp.path().join(CA_CERT), "hello\n").expect("write");
    let err = Authority::load(tmp.path()).expect_err("no certificate");
    assert!(matches!(err, CaError::NoCertificate { .. }), "{err:?}");
    assert!(err.to_string().contains(CA_CERT), "{err}");

    std::fs::write(
        tmp.path().join(CA_CERT),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let err = Authority::load(tmp.path()).expect_err("bad certificate");
    assert!(
        matches!(err, CaError::BadCertificate { index: 1, .. }),
        "{err:?}"
    );
}

#[test]
fn a_leaf_is_an_svid() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (authority, _) = Authority::open(tmp.path()).expect("generated");
    let now = OffsetDateTime::now_utc();
    let lifetime = Duration::from_secs(3600);
    let chain = authority.issue(&spki(), ID, lifetime, now).expect("issued");
    assert_eq!(chain.len(), 1, "self-signed anchor: the leaf alone");
    let (_, leaf) = X509Certificate::from_der(&chain[0]).expect("leaf parses");
    let san = leaf
        .subject_alternative_name()
        .expect("san")
        .expect("present");
    assert!(san.critical, "empty subject: the SAN is critical");
    assert_eq!(san.value.general_names.len(), 1);
    assert!(
        matches!(san.value.general_names[0], x509_parser::extensions::GeneralName::URI(u) if u == ID)
    );
    let eku = leaf
        .extended_key_usage()
        .expect("eku")
        .expect("present")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!leaf.is_ca());
    let v = leaf.validity();
    assert_eq!(
        v.not_after.timestamp() - v.not_before.timestamp(),
        (lifetime + CLOCK_SKEW).as_secs() as i64
    );
    assert!(leaf.raw_serial()[0] & 0x80 == 0, "positive serial");

    let other = authority.issue(&spki(), ID, lifetime, now).expect("issued");
    let (_, second) = X509Certificate::from_der(&other[0]).expect("parses");
    assert_ne!(leaf.raw_serial(), second.raw_serial(), "serials are random");
}

#[test]
fn an_intermediate_chains_to_its_root_and_extras_are_deduplicated() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (root_pem, _, root) = self_signed("root");
    let mid_key = KeyPair::generate().expect("key");
    let mid_key_pem = mid_key.serialize_pem();
    let mid = CertifiedIssuer::signed_by(ca_params("intermediate"), mid_key, &root)
        .expect("intermediate");
    let (extra_pem, _, _) = self_signed("next root");
    std::fs::write(tmp.path().join(CA_CERT), mid.pem()).expect("write");
    std::fs::write(tmp.path().join(CA_KEY), &mid_key_pem).expect("write");
    std::fs::write(tmp.path().join(ROOT_CERT), &root_pem).expect("write");
    // The root again (a duplicate) and a new one.
    std::fs::write(
        tmp.path().join(EXTRA_ANCHORS),
        format!("{root_pem}{extra_pem}"),
    )
    .expect("write");

    let authority = Authority::load(tmp.path()).expect("loads");
    let anchors = authority.trust_anchors();
    assert_eq!(anchors.len(), 2);
    assert_eq!(anchors[0], root.der().to_vec(), "the root comes first");
    let chain = authority
        .issue(
            &spki(),
            ID,
            Duration::from_secs(60),
            OffsetDateTime::now_utc(),
        )
        .expect("issued");
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], mid.der().to_vec());

    // A root that did not sign ca.crt.
    let (stranger, _, _) = self_signed("stranger");
    std::fs::write(tmp.path().join(ROOT_CERT), stranger).expect("write");
    assert!(matches!(
        Authority::load(tmp.path()),
        Err(CaError::NotSignedByRoot { .. })
    ));
}

#[test]
fn a_leaf_never_outlives_its_issuer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = KeyPair::generate().expect("key");
    let key_pem = key.serialize_pem();
    let now = OffsetDateTime::now_utc();
    let mut params = ca_params("short");
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + Duration::from_secs(600);
    let issuer = CertifiedIssuer::self_signed(params, key).expect("self-signed");
    std::fs::write(tmp.path().join(CA_CERT), issuer.pem()).expect("write");
    std::fs::write(tmp.path().join(CA_KEY), key_pem).expect("write");
    let authority = Authority::load(tmp.path()).expect("loads");
    let chain = authority
        .issue(&spki(), ID, Duration::from_secs(24 * 3600), now)
        .expect("issued");
    let (_, leaf) = X509Certificate::from_der(&chain[0]).expect("parses");
    let (_, ca) = X509Certificate::from_der(issuer.der()).expect("parses");
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        ca.validity().not_after.timestamp()
    );
}

#[test]
fn a_server_certificate_names_dns_only_and_needs_a_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (authority, _) = Authority::open(tmp.path()).expect("generated");
    let now = OffsetDateTime::now_utc();
    let lifetime = Duration::from_secs(600);
    assert!(authority.issue_server(&spki(), &[], lifetime, now).is_err());
    let chain = authority
        .issue_server(&spki(), &["webhook.ns.svc".to_owned()], lifetime, now)
        .expect("issued");
    let (_, leaf) = X509Certificate::from_der(&chain[0]).expect("parses");
    let san = leaf
        .subject_alternative_name()
        .expect("san")
        .expect("present");
    assert_eq!(san.value.general_names.len(), 1);
    assert!(matches!(
        san.value.general_names[0],
        x509_parser::extensions::GeneralName::DNSName("webhook.ns.svc")
    ));
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        (now + lifetime).unix_timestamp()
    );
}

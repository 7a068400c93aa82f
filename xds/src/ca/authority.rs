//! The signer and the trust anchors, read from the CA directory: `ca.crt` + `ca.key` sign,
//! `root.crt` (optional) is the anchor above an intermediate `ca.crt`, `trust-anchors.crt`
//! (optional) adds anchors for a rotation. Generates a self-signed anchor on first start.

use std::{
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::{certificate::X509Certificate, pem::Pem, prelude::FromDer};

use super::error::CaError;

/// The signer's certificate.
pub const CA_CERT: &str = "ca.crt";
/// The signer's private key (PEM), 0600.
pub const CA_KEY: &str = "ca.key";
/// Present: `ca.crt` is an intermediate signed by this root, which is then the anchor.
pub const ROOT_CERT: &str = "root.crt";
/// Present: more anchors trusted as well (any number of PEM certificates).
pub const EXTRA_ANCHORS: &str = "trust-anchors.crt";

/// Leaves start this far in the past, so a peer whose clock is a little behind accepts them.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The generated anchor's lifetime: ten years. Rotating it is an operator's act
/// (`trust-anchors.crt`), not something the control plane does on its own.
const GENERATED_ANCHOR_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The generated anchor's common name.
const GENERATED_ANCHOR_CN: &str = "Skiff mesh CA";

/// A loaded CA: what signs, what comes after the leaf in a chain, and what proxies trust.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// `ca.crt` when it is an intermediate; empty when it is the anchor itself.
    intermediates: Vec<Vec<u8>>,
    /// The root first, then the extra anchors; deduplicated.
    anchors: Vec<Vec<u8>>,
    /// No leaf outlives the certificate that signed it.
    issuer_not_after: OffsetDateTime,
    /// The root anchor's notAfter, Unix seconds.
    anchor_not_after: i64,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("issuer", &self.issuer)
            .field("intermediates", &self.intermediates.len())
            .field("anchors", &self.anchors.len())
            .field("issuer_not_after", &self.issuer_not_after)
            .finish()
    }
}

impl Authority {
    /// At startup: loads `dir`, first creating it (0700) and a self-signed anchor in it
    /// (`ca.key` 0600) when the directory or both `ca.crt` and `ca.key` are absent. Returns
    /// whether the anchor was generated.
    pub fn open(dir: &Path) -> Result<(Authority, bool), CaError> {
        let cert = dir.join(CA_CERT);
        let key = dir.join(CA_KEY);
        let generated = match (exists(&cert)?, exists(&key)?) {
            (true, true) => false,
            (true, false) => {
                return Err(CaError::Missing {
                    present: cert,
                    missing: key,
                });
            }
            (false, true) => {
                return Err(CaError::Missing {
                    present: key,
                    missing: cert,
                });
            }
            (false, false) => {
                let root = dir.join(ROOT_CERT);
                if exists(&root)? {
                    // An intermediate cannot be made up: its root's key is not here.
                    return Err(CaError::Missing {
                        present: root,
                        missing: cert,
                    });
                }
                generate(dir)?;
                true
            }
        };
        Ok((Authority::load(dir)?, generated))
    }

    /// Loads and checks the CA directory as it is now; creates nothing.
    pub fn load(dir: &Path) -> Result<Authority, CaError> {
        let now = OffsetDateTime::now_utc();
        let ca_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let root_path = dir.join(ROOT_CERT);
        let extra_path = dir.join(EXTRA_ANCHORS);

        // `ca.crt` may carry its chain after it; the first certificate is the signer's.
        let ca_der = first(read_certs(&ca_path)?, &ca_path)?;
        let ca = parse(&ca_der, &ca_path, 1)?;
        require_ca(&ca, &ca_path)?;
        require_valid(&ca, &ca_path, now)?;

        let key_pem = std::fs::read_to_string(&key_path).map_err(|source| CaError::Read {
            path: key_path.clone(),
            source,
        })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|source| CaError::BadKey {
            path: key_path.clone(),
            source,
        })?;
        if key.public_key_raw() != ca.public_key().subject_public_key.data.as_ref() {
            return Err(CaError::KeyMismatch {
                cert: ca_path,
                key: key_path,
            });
        }

        let (intermediates, root_der, anchor_not_after) = if exists(&root_path)? {
            let root_der = first(read_certs(&root_path)?, &root_path)?;
            let root = parse(&root_der, &root_path, 1)?;
            require_ca(&root, &root_path)?;
            require_valid(&root, &root_path, now)?;
            if ca.verify_signature(Some(root.public_key())).is_err() {
                return Err(CaError::NotSignedByRoot {
                    cert: ca_path,
                    root: root_path,
                });
            }
            let expiry = root.validity().not_after.timestamp();
            (vec![ca_der.clone()], root_der, expiry)
        } else {
            (
                Vec::new(),
                ca_der.clone(),
                ca.validity().not_after.timestamp(),
            )
        };

        let mut anchors = vec![root_der];
        if exists(&extra_path)? {
            for (i, der) in read_certs(&extra_path)?.into_iter().enumerate() {
                let cert = parse(&der, &extra_path, i + 1)?;
                require_ca(&cert, &extra_path)?;
                if !anchors.contains(&der) {
                    anchors.push(der);
                }
            }
        }

        let issuer_not_after = ca.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(&ca_der.clone().into(), key).map_err(|source| {
            CaError::Unusable {
                path: ca_path,
                source,
            }
        })?;
        Ok(Authority {
            issuer,
            intermediates,
            anchors,
            issuer_not_after,
            anchor_not_after,
        })
    }

    /// The trust anchors (DER) proxies verify peers against.
    pub fn trust_anchors(&self) -> &[Vec<u8>] {
        &self.anchors
    }

    /// When the root anchor expires, in Unix seconds.
    pub fn anchor_expiration(&self) -> i64 {
        self.anchor_not_after
    }

    /// Signs a leaf for `spiffe_id` over `public_key`, valid from `now - CLOCK_SKEW` for
    /// `lifetime` (never past `ca.crt`'s own expiry). Returns the chain: the leaf, then any
    /// intermediate.
    pub fn issue(
        &self,
        public_key: &rcgen::SubjectPublicKeyInfo,
        spiffe_id: &str,
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<Vec<u8>>, rcgen::Error> {
        let mut params = CertificateParams::default();
        // An empty subject, as SPIFFE SVIDs have; rcgen then marks the SAN critical.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign_leaf(params, public_key, lifetime, now)
    }

    /// Signs a plain TLS server certificate over `public_key` for `dns_names` (the admission
    /// webhook's Service names): DNS SANs only, the first name also the subject's CN,
    /// extended key usage serverAuth alone, so it can never pass as a workload identity.
    /// Validity and chain as [`Authority::issue`].
    pub fn issue_server(
        &self,
        public_key: &rcgen::SubjectPublicKeyInfo,
        dns_names: &[String],
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<Vec<u8>>, rcgen::Error> {
        let Some(first) = dns_names.first() else {
            // A certificate for no name would verify for nothing.
            return Err(rcgen::Error::CouldNotParseCertificationRequest);
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
        params.subject_alt_names = dns_names
            .iter()
            .map(|name| Ok(SanType::DnsName(name.as_str().try_into()?)))
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign_leaf(params, public_key, lifetime, now)
    }

    /// What every leaf shares: not a CA, signature key usages, a random serial, the
    /// authority key identifier, validity from `now - CLOCK_SKEW` for `lifetime` capped at
    /// `ca.crt`'s expiry; returns the leaf followed by any intermediate.
    fn sign_leaf(
        &self,
        mut params: CertificateParams,
        public_key: &rcgen::SubjectPublicKeyInfo,
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<Vec<Vec<u8>>, rcgen::Error> {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        params.not_before = now - CLOCK_SKEW;
        params.not_after = (now + lifetime).min(self.issuer_not_after);
        let leaf = params.signed_by(public_key, &self.issuer)?;
        let mut chain = Vec::with_capacity(1 + self.intermediates.len());
        chain.push(leaf.der().to_vec());
        chain.extend(self.intermediates.iter().cloned());
        Ok(chain)
    }
}

/// Writes a fresh self-signed ECDSA P-256 anchor into `dir`, creating it (0700) if needed.
fn generate(dir: &Path) -> Result<(), CaError> {
    if !exists(dir)? {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| CaError::Write {
                path: dir.to_owned(),
                source,
            })?;
    }
    let generate_error = |source| CaError::Generate {
        dir: dir.to_owned(),
        source,
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate_error)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, GENERATED_ANCHOR_CN);
    // pathLen 0: this anchor signs leaves itself. An operator who wants intermediates
    // brings their own root (`root.crt`). No name constraints: webpki refuses every leaf
    // with a URI SAN under a CA constrained on URIs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial().map_err(generate_error)?);
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + GENERATED_ANCHOR_LIFETIME;
    let cert = params.self_signed(&key).map_err(generate_error)?;
    // The key first: a start interrupted between the two writes leaves a key without a
    // certificate, which the next start names instead of silently replacing.
    write_new(&dir.join(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&dir.join(CA_CERT), cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// Creates `path` (never overwriting) with `mode`, whatever the umask.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let write_error = |source| CaError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(write_error)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(write_error)?;
    file.write_all(bytes).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

/// A positive, non-zero serial of 128 random bits (RFC 5280 allows up to 20 octets).
fn random_serial() -> Result<SerialNumber, rcgen::Error> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| rcgen::Error::RingUnspecified)?;
    // Top bit clear: positive in DER. Second bit set: never zero, always 16 octets.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn exists(path: &Path) -> Result<bool, CaError> {
    path.try_exists().map_err(|source| CaError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every PEM `CERTIFICATE` block of a file, as DER, each checked to parse.
fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, CaError> {
    let bytes = std::fs::read(path).map_err(|source| CaError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut certs = Vec::new();
    for block in Pem::iter_from_buffer(&bytes) {
        let block = block.map_err(|_| CaError::BadCertificate {
            path: path.to_owned(),
            index: certs.len() + 1,
            reason: x509_parser::error::X509Error::InvalidCertificate,
        })?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        parse(&block.contents, path, certs.len() + 1)?;
        certs.push(block.contents);
    }
    Ok(certs)
}

fn first(certs: Vec<Vec<u8>>, path: &Path) -> Result<Vec<u8>, CaError> {
    certs
        .into_iter()
        .next()
        .ok_or_else(|| CaError::NoCertificate {
            path: path.to_owned(),
        })
}

fn parse<'a>(der: &'a [u8], path: &Path, index: usize) -> Result<X509Certificate<'a>, CaError> {
    let bad = |reason| CaError::BadCertificate {
        path: path.to_owned(),
        index,
        reason,
    };
    match X509Certificate::from_der(der) {
        Ok((rest, _)) if !rest.is_empty() => {
            Err(bad(x509_parser::error::X509Error::InvalidCertificate))
        }
        Ok((_, cert)) => Ok(cert),
        Err(x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e)) => Err(bad(e)),
        Err(x509_parser::nom::Err::Incomplete(_)) => {
            Err(bad(x509_parser::error::X509Error::InvalidCertificate))
        }
    }
}

fn require_ca(cert: &X509Certificate<'_>, path: &Path) -> Result<(), CaError> {
    let not_ca = || CaError::NotCa {
        path: path.to_owned(),
    };
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    // Key usage is optional in a CA certificate; when present it must allow signing certs.
    let may_sign = match cert.key_usage() {
        Ok(Some(ku)) => ku.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    if is_ca && may_sign {
        Ok(())
    } else {
        Err(not_ca())
    }
}

fn require_valid(
    cert: &X509Certificate<'_>,
    path: &Path,
    now: OffsetDateTime,
) -> Result<(), CaError> {
    let validity = cert.validity();
    let (from, to) = (
        validity.not_before.to_datetime(),
        validity.not_after.to_datetime(),
    );
    if from <= now && now <= to {
        Ok(())
    } else {
        Err(CaError::OutsideValidity {
            path: path.to_owned(),
            not_before: validity.not_before.to_string(),
            not_after: validity.not_after.to_string(),
        })
    }
}

/// The paths whose changes the watcher looks for.
pub fn watched_files(dir: &Path) -> [PathBuf; 4] {
    [CA_CERT, CA_KEY, ROOT_CERT, EXTRA_ANCHORS].map(|f| dir.join(f))
}

#[cfg(test)]
mod tests;

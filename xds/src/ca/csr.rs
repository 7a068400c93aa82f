//! Checking a proxy's CSR: it parses, its signature verifies, and it names exactly one
//! subject alternative name, a `spiffe://` URI. Only that URI and the public key are taken
//! from it; whatever else it asks for (subject, key usages, CA) is ignored by the signer.

use x509_parser::{
    certification_request::X509CertificationRequest, extensions::GeneralName,
    extensions::ParsedExtension, prelude::FromDer,
};

use super::error::CsrError;

/// A real CSR is a few hundred bytes; this bounds the parsing work a caller can ask for.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// What the signer takes from a CSR that passed [`check`].
#[derive(Debug)]
pub struct CheckedCsr {
    /// The one URI SAN, as written.
    pub spiffe_id: String,
    pub public_key: rcgen::SubjectPublicKeyInfo,
}

/// Parses and checks a DER PKCS#10 request.
pub fn check(der: &[u8]) -> Result<CheckedCsr, CsrError> {
    if der.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge {
            len: der.len(),
            max: MAX_CSR_BYTES,
        });
    }
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|_| CsrError::Parse)?;
    if !rest.is_empty() {
        return Err(CsrError::Parse);
    }
    csr.verify_signature().map_err(|_| CsrError::Signature)?;

    let mut uris = Vec::new();
    let mut others = 0;
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::URI(uri) => uris.push(*uri),
                    _ => others += 1,
                }
            }
        }
    }
    let [uri] = uris[..] else {
        return Err(CsrError::Names {
            uris: uris.len(),
            others,
        });
    };
    if others != 0 {
        return Err(CsrError::Names { uris: 1, others });
    }
    if !uri.starts_with("spiffe://") {
        return Err(CsrError::NotSpiffe {
            uri: uri.to_owned(),
        });
    }
    let public_key =
        rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
            .map_err(|_| CsrError::UnsupportedKey)?;
    Ok(CheckedCsr {
        spiffe_id: uri.to_owned(),
        public_key,
    })
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType};

    use super::*;

    const ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

    fn csr_with(sans: Vec<SanType>, key: &KeyPair) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params
            .serialize_request(key)
            .expect("serialize CSR")
            .der()
            .to_vec()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().expect("ia5 uri"))
    }

    #[test]
    fn one_spiffe_uri_passes() {
        let key = KeyPair::generate().expect("key");
        let checked = check(&csr_with(vec![uri(ID)], &key)).expect("good CSR");
        assert_eq!(checked.spiffe_id, ID);
        use rcgen::PublicKeyData as _;
        assert_eq!(checked.public_key.der_bytes(), key.public_key_raw());
    }

    #[test]
    fn garbage_does_not_parse() {
        assert_eq!(check(b"not a csr").unwrap_err(), CsrError::Parse);
        assert_eq!(check(&[]).unwrap_err(), CsrError::Parse);
        let key = KeyPair::generate().expect("key");
        let mut trailing = csr_with(vec![uri(ID)], &key);
        trailing.push(0);
        assert_eq!(check(&trailing).unwrap_err(), CsrError::Parse);
    }

    #[test]
    fn oversized_is_refused_before_parsing() {
        let err = check(&vec![0u8; MAX_CSR_BYTES + 1]).unwrap_err();
        assert!(matches!(err, CsrError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn a_tampered_csr_fails_its_signature() {
        let key = KeyPair::generate().expect("key");
        let mut der = csr_with(vec![uri(ID)], &key);
        // The SAN's last character sits inside the signed request info.
        let at = der
            .windows(ID.len())
            .position(|w| w == ID.as_bytes())
            .expect("the ID is in the DER")
            + ID.len()
            - 1;
        der[at] = b'x';
        assert_eq!(check(&der).unwrap_err(), CsrError::Signature);
    }

    #[test]
    fn names_must_be_exactly_one_spiffe_uri() {
        let key = KeyPair::generate().expect("key");
        let cases = [
            (vec![], CsrError::Names { uris: 0, others: 0 }),
            (
                vec![uri(ID), uri("spiffe://cluster.local/ns/default/sa/other")],
                CsrError::Names { uris: 2, others: 0 },
            ),
            (
                vec![
                    uri(ID),
                    SanType::DnsName("reviews".try_into().expect("dns")),
                ],
                CsrError::Names { uris: 1, others: 1 },
            ),
            (
                vec![SanType::DnsName("reviews".try_into().expect("dns"))],
                CsrError::Names { uris: 0, others: 1 },
            ),
            (
                vec![uri("https://reviews/")],
                CsrError::NotSpiffe {
                    uri: "https://reviews/".into(),
                },
            ),
        ];
        for (sans, want) in cases {
            assert_eq!(check(&csr_with(sans, &key)).unwrap_err(), want);
        }
    }
}

//! Certificates the webhook's own `pki::Ca` does not make, built with rcgen
//! directly: a client certificate whose subject carries two CNs.

use kube_authn_webhook::pki::Issued;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A CA of the tests' own, to sign certificates `pki::Ca` would not. Add
/// `cert_pem` to a client CA bundle to have the webhook trust what it signs.
/// Certificates keep rcgen's default validity (1975 to 4096).
pub struct OddCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

impl OddCa {
    pub fn new(common_name: &str) -> OddCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = subject(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        OddCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An ordinary client certificate: one CN, no SAN.
    pub fn client(&self, common_name: &str) -> Issued {
        self.client_with_subject(subject(common_name))
    }

    /// A client certificate whose subject has two commonName attributes,
    /// `first` then `second`, each in its own RDN, and no SAN.
    pub fn client_with_two_common_names(&self, first: &str, second: &str) -> Issued {
        let mut dn = subject(first);
        // rcgen keeps one value per `DnType`: the second CN goes in under
        // the commonName OID (2.5.4.3) spelled as a custom type, which
        // encodes to the same attribute.
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 3]), second);
        self.client_with_subject(dn)
    }

    fn client_with_subject(&self, dn: DistinguishedName) -> Issued {
        let key = KeyPair::generate().expect("client key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("client certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

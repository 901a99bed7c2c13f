//! A small private PKI (rcgen): a CA, serving certificates and client
//! certificates, for the `certs` command, the demo and the test kit.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;

pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    /// The CA's private key (PKCS#8 PEM): needed to issue more certificates
    /// later; keep it as secret as the certificates it signs.
    pub(crate) key_pem: String,
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // A little backdating absorbs clock differences between machines.
    params.not_before = now - Duration::from_secs(300);
    params.not_after = now + Duration::from_secs(u64::from(days) * 86_400);
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

impl Ca {
    pub fn new(common_name: &str, days: u32) -> Result<Ca, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, days);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its PEM certificate and key (as `certs` wrote them), to
    /// issue more certificates under the same trust anchor. Returns the CA
    /// and its notAfter (Unix time).
    pub(crate) fn from_pem(cert_pem: &str, key_pem: &str) -> Result<(Ca, i64), String> {
        let key =
            KeyPair::from_pem(key_pem).map_err(|e| format!("not a usable private key: {e}"))?;
        let der = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()
            .ok_or("holds no PEM CERTIFICATE")?
            .map_err(|e| format!("bad PEM: {e}"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        if !cert.is_ca() {
            return Err("is not a CA certificate (basicConstraints CA:FALSE)".to_owned());
        }
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err("the key does not belong to this CA certificate".to_owned());
        }
        let not_after = cert.validity().not_after.timestamp();
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| e.to_string())?;
        let key_pem = key_pem.to_owned();
        Ok((
            Ca {
                issuer,
                cert_pem: cert_pem.to_owned(),
                key_pem,
            },
            not_after,
        ))
    }

    /// A serving certificate; entries of `sans` that parse as IP addresses
    /// become IP SANs, the rest DNS names.
    pub fn server(&self, sans: &[String], days: u32) -> Result<Issued, rcgen::Error> {
        let cn = sans.first().map_or("kube-authn-webhook", String::as_str);
        self.leaf(sans, cn, ExtendedKeyUsagePurpose::ServerAuth, days)
    }

    pub fn client(&self, common_name: &str, days: u32) -> Result<Issued, rcgen::Error> {
        self.leaf(&[], common_name, ExtendedKeyUsagePurpose::ClientAuth, days)
    }

    fn leaf(
        &self,
        sans: &[String],
        common_name: &str,
        usage: ExtendedKeyUsagePurpose,
        days: u32,
    ) -> Result<Issued, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans.to_vec())?;
        params.distinguished_name = name(common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, days);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

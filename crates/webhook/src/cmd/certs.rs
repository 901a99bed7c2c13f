//! `kube-authn-webhook certs`: writes a CA, the webhook's serving
//! certificate and the kube-apiserver's client certificate as PEM files.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use kube_authn_common::clock::unix_now;
use kube_authn_common::fs::{Existing, write_atomic};

use crate::pki::Ca;

/// Common name of the client certificate `certs` issues to the kube-apiserver.
pub(crate) const APISERVER_CLIENT_CN: &str = "kube-apiserver-authn-client";
/// Longest validity `certs` issues: twenty years.
pub(crate) const MAX_DAYS: u32 = 7300;

/// The files `certs` writes, in the order it writes them: (name, is a private key).
pub(crate) const BUNDLE_FILES: [(&str, bool); 6] = [
    ("ca.crt", false),
    ("ca.key", true),
    ("tls.crt", false),
    ("tls.key", true),
    ("apiserver-client.crt", false),
    ("apiserver-client.key", true),
];

/// What `certs` is asked for.
pub struct BundleRequest<'a> {
    pub out: &'a Path,
    /// DNS names and IP addresses the webhook is reached at.
    pub server_sans: &'a [String],
    /// Validity of the serving and client certificates.
    pub days: u32,
    /// Validity of a new CA; at least `days`.
    pub ca_days: u32,
    /// Replace files that exist instead of refusing.
    pub force: bool,
    /// Keep the CA in `out` (ca.crt, ca.key) and issue new serving and client
    /// certificates from it: renewal without changing what the kube-apiserver
    /// and the webhook trust.
    pub renew: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("--server-san: {0}")]
    San(String),
    #[error("--days must be between 1 and {MAX_DAYS}, not {0}")]
    Days(u32),
    #[error("--ca-days must be at least --days ({days}) and at most {MAX_DAYS}, not {ca_days}")]
    CaDays { days: u32, ca_days: u32 },
    #[error("--renew: {path}: {why}")]
    Renew { path: PathBuf, why: String },
    #[error(
        "refusing to overwrite {}; to renew the serving and client certificates from the CA already there, pass --renew (nothing else changes); --force replaces everything, the CA included (the kube-apiserver's webhook kubeconfig must then be regenerated too)",
        .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Exists(Vec<PathBuf>),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// What `certs` wrote, for the summary it prints.
#[derive(Debug)]
pub struct Bundle {
    pub(crate) files: Vec<PathBuf>,
    pub(crate) server_sans: Vec<String>,
    pub(crate) days: u32,
    /// The CA was kept (`--renew`), not made.
    pub(crate) renewed: bool,
}

impl fmt::Display for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.renewed {
            "kept the CA and wrote"
        } else {
            "wrote a CA,"
        };
        writeln!(
            f,
            "{what} a serving certificate for {} and a client certificate (CN={APISERVER_CLIENT_CN}), valid {} days:",
            self.server_sans.join(", "),
            self.days
        )?;
        for p in &self.files {
            writeln!(f, "  {}", p.display())?;
        }
        write!(
            f,
            "keys are mode 0600. Next: point server.tls at tls.crt/tls.key with client_ca_file: ca.crt, and run\n  kube-authn-webhook kubeconfig --server https://<host>:<port>/authenticate --ca ca.crt --client-cert apiserver-client.crt --client-key apiserver-client.key"
        )
    }
}

/// Checks one `--server-san` entry: an IP address or a DNS name (a leading
/// `*.` wildcard allowed), returned in the form that goes into the certificate.
pub(crate) fn parse_san(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("an empty entry (two commas, or a trailing comma?)".to_owned());
    }
    if let Ok(ip) = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(ip.to_string());
    }
    if s.contains("://") || s.contains('/') || s.contains(':') {
        return Err(format!(
            "{s:?} is not a host name or IP address (give the host only, no scheme, port or path)"
        ));
    }
    let name = s.to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name);
    let labels = name.strip_prefix("*.").unwrap_or(name);
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if name.len() > 253 || !labels.split('.').all(ok_label) {
        return Err(format!(
            "{s:?} is not a valid DNS name (letters, digits and '-' in dot-separated labels of at most 63 characters) or IP address"
        ));
    }
    Ok(name.to_owned())
}

/// Generates a CA, a serving certificate and the kube-apiserver's client
/// certificate, and writes them into `req.out` (created if missing). Nothing
/// is written unless every file can be: existing files are reported up front,
/// and each file is written to a temporary name and renamed into place.
pub fn write_bundle(req: &BundleRequest<'_>) -> Result<Bundle, CertsError> {
    if req.days == 0 || req.days > MAX_DAYS {
        return Err(CertsError::Days(req.days));
    }
    let mut sans = Vec::new();
    for raw in req.server_sans {
        let san = parse_san(raw).map_err(CertsError::San)?;
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    if sans.is_empty() {
        return Err(CertsError::San(
            "name at least one DNS name or IP address the kube-apiserver uses to reach the webhook"
                .to_owned(),
        ));
    }
    if req.ca_days < req.days || req.ca_days > MAX_DAYS {
        return Err(CertsError::CaDays {
            days: req.days,
            ca_days: req.ca_days,
        });
    }
    let paths: Vec<PathBuf> = BUNDLE_FILES
        .iter()
        .map(|(name, _)| req.out.join(name))
        .collect();
    if !req.force && !req.renew {
        let existing: Vec<PathBuf> = paths.iter().filter(|p| p.exists()).cloned().collect();
        if !existing.is_empty() {
            return Err(CertsError::Exists(existing));
        }
    }

    let ca = if req.renew {
        load_ca_for_renewal(req.out, req.days)?
    } else {
        Ca::new("kube-authn-webhook CA", req.ca_days)?
    };
    let server = ca.server(&sans, req.days)?;
    let client = ca.client(APISERVER_CLIENT_CN, req.days)?;
    let contents = [
        &ca.cert_pem,
        &ca.key_pem,
        &server.cert_pem,
        &server.key_pem,
        &client.cert_pem,
        &client.key_pem,
    ];

    std::fs::create_dir_all(req.out).map_err(|source| CertsError::Io {
        path: req.out.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    for ((path, (name, secret)), text) in paths.iter().zip(BUNDLE_FILES).zip(contents) {
        if req.renew && name.starts_with("ca.") {
            continue;
        }
        write_file(path, text.as_bytes(), secret, req.force || req.renew)?;
        written.push(path.clone());
    }
    Ok(Bundle {
        files: written,
        server_sans: sans,
        days: req.days,
        renewed: req.renew,
    })
}

/// The CA an earlier run left in `dir`, if it can sign certificates valid
/// for `days` more days.
fn load_ca_for_renewal(dir: &Path, days: u32) -> Result<Ca, CertsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| CertsError::Renew {
            path: path.clone(),
            why: format!(
                "cannot read it ({e}); --renew keeps the CA an earlier `certs` run wrote there"
            ),
        })
    };
    let (cert_pem, key_pem) = (read("ca.crt")?, read("ca.key")?);
    let (ca, not_after) = Ca::from_pem(&cert_pem, &key_pem).map_err(|why| CertsError::Renew {
        path: dir.join("ca.crt"),
        why,
    })?;
    let needed = unix_now() + u64::from(days) * 86_400;
    if i64::try_from(needed).unwrap_or(i64::MAX) > not_after {
        return Err(CertsError::Renew {
            path: dir.join("ca.crt"),
            why: format!(
                "the CA expires in {} days, before certificates valid {days} days would; issue shorter ones (--days) or make a new CA (--force instead of --renew, then regenerate the kube-apiserver's kubeconfig)",
                (not_after - i64::try_from(unix_now()).unwrap_or(0)).max(0) / 86_400
            ),
        });
    }
    Ok(ca)
}

/// Private keys are 0600 from the moment the file exists (never readable by
/// others, not even briefly); certificates 0644.
fn write_file(path: &Path, contents: &[u8], secret: bool, force: bool) -> Result<(), CertsError> {
    let mode = if secret { 0o600 } else { 0o644 };
    // Keep fails if the file appeared since the check in write_bundle.
    let existing = if force {
        Existing::Replace
    } else {
        Existing::Keep
    };
    write_atomic(path, contents, mode, existing).map_err(|source| CertsError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_are_checked() {
        assert_eq!(parse_san(" 127.0.0.1 ").as_deref(), Ok("127.0.0.1"));
        assert_eq!(parse_san("[::1]").as_deref(), Ok("::1"));
        assert_eq!(
            parse_san("Authn-Webhook.Kube-System.svc").as_deref(),
            Ok("authn-webhook.kube-system.svc")
        );
        assert_eq!(parse_san("*.example.com").as_deref(), Ok("*.example.com"));
        for bad in [
            "",
            "https://x.example.com",
            "x.example.com:8443",
            "-x.com",
            "a..b",
            "a b",
        ] {
            assert!(parse_san(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn bundle_is_written_with_private_keys_0600_and_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("pki");
        let sans = vec!["127.0.0.1".to_owned(), "authn.example.com".to_owned()];
        let req = BundleRequest {
            out: &out,
            server_sans: &sans,
            days: 30,
            ca_days: 60,
            force: false,
            renew: false,
        };
        let bundle = write_bundle(&req).expect("first write");
        assert_eq!(bundle.files.len(), BUNDLE_FILES.len());
        for (name, secret) in BUNDLE_FILES {
            let p = out.join(name);
            let text = std::fs::read_to_string(&p).expect("written");
            assert!(text.starts_with("-----BEGIN "), "{name} is PEM");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777;
                assert_eq!(mode, if secret { 0o600 } else { 0o644 }, "{name}");
            }
        }
        let before = std::fs::read(out.join("tls.key")).expect("read");
        match write_bundle(&req) {
            Err(CertsError::Exists(p)) => assert_eq!(p.len(), BUNDLE_FILES.len()),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(std::fs::read(out.join("tls.key")).expect("read"), before);
        write_bundle(&BundleRequest { force: true, ..req }).expect("forced write");
        assert_ne!(std::fs::read(out.join("tls.key")).expect("read"), before);
        let leftovers = std::fs::read_dir(&out)
            .expect("list")
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.file_name().to_string_lossy().starts_with('.'))
                    .unwrap_or(true)
            })
            .count();
        assert_eq!(leftovers, 0, "no temporary files left behind");
    }

    #[test]
    fn bad_requests_write_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("pki");
        let sans = vec!["https://x".to_owned()];
        let req = BundleRequest {
            out: &out,
            server_sans: &sans,
            days: 30,
            ca_days: 60,
            force: false,
            renew: false,
        };
        assert!(matches!(write_bundle(&req), Err(CertsError::San(_))));
        let ok = vec!["x".to_owned()];
        assert!(matches!(
            write_bundle(&BundleRequest {
                server_sans: &ok,
                days: 0,
                ..req
            }),
            Err(CertsError::Days(0))
        ));
        assert!(matches!(
            write_bundle(&BundleRequest {
                server_sans: &ok,
                ca_days: 10,
                ..req
            }),
            Err(CertsError::CaDays { .. })
        ));
        assert!(matches!(
            write_bundle(&BundleRequest {
                server_sans: &ok,
                renew: true,
                ..req
            }),
            Err(CertsError::Renew { .. })
        ));
        assert!(!out.exists());
    }

    #[test]
    fn renew_keeps_the_ca_and_replaces_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().to_owned();
        let sans = vec!["127.0.0.1".to_owned()];
        let req = BundleRequest {
            out: &out,
            server_sans: &sans,
            days: 30,
            ca_days: 40,
            force: false,
            renew: false,
        };
        write_bundle(&req).expect("first write");
        let read = |n: &str| std::fs::read(out.join(n)).expect("read");
        let (ca, ca_key, tls, client) = (
            read("ca.crt"),
            read("ca.key"),
            read("tls.crt"),
            read("apiserver-client.crt"),
        );
        let bundle = write_bundle(&BundleRequest { renew: true, ..req }).expect("renewal");
        assert_eq!(bundle.files.len(), 4, "the CA files are not rewritten");
        assert_eq!(read("ca.crt"), ca);
        assert_eq!(read("ca.key"), ca_key);
        assert_ne!(read("tls.crt"), tls);
        assert_ne!(read("apiserver-client.crt"), client);
        // The CA (40 days) cannot back certificates valid for 50.
        let e = write_bundle(&BundleRequest {
            renew: true,
            days: 50,
            ca_days: 50,
            ..req
        })
        .expect_err("CA too short");
        assert!(e.to_string().contains("the CA expires in"), "{e}");
        // A key that is not the CA's is refused.
        std::fs::copy(out.join("tls.key"), out.join("ca.key")).expect("copy");
        let e = write_bundle(&BundleRequest { renew: true, ..req }).expect_err("wrong key");
        assert!(e.to_string().contains("does not belong"), "{e}");
    }
}

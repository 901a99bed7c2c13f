//! HTTPS to Keystone, resmgr, Dex and EFA: one client, no redirects
//! followed (a redirected POST would lose or re-send the password
//! elsewhere), bounded answers, and failures sorted into what a person can
//! act on (unreachable, TLS, timeout).

use std::path::{Path, PathBuf};
use std::time::Duration;

use openidconnect::{HttpRequest, HttpResponse};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, LOCATION};
use serde_json::Value;

use super::error::{CaBundleError, LoginError, Service};

/// Answers larger than this are not token responses (Dex id_tokens with
/// many groups reach 40-60 KB).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A PEM CA bundle file, checked with the same parser as the webhook's CA
/// files: a clear "no certificate" instead of an empty trust store.
pub(crate) fn read_ca_bundle(path: &Path) -> Result<Vec<u8>, CaBundleError> {
    let pem = kube_authn_common::fs::read_bounded(path)?;
    kube_authn_common::parse_ca_bundle(&pem).map_err(CaBundleError::Parse)?;
    Ok(pem)
}

pub(crate) struct Http {
    client: reqwest::Client,
    ca_file: Option<PathBuf>,
    timeout: Duration,
}

/// A complete answer.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The start of a non-JSON body, for error messages.
    pub(crate) fn snippet(&self) -> String {
        snippet(&self.body)
    }

    /// The answer as openidconnect reads it.
    pub(crate) fn into_http(self, service: Service, url: &str) -> Result<HttpResponse, LoginError> {
        let status = StatusCode::from_u16(self.status).map_err(|e| LoginError::BadResponse {
            service,
            url: url.to_owned(),
            why: format!("HTTP status {}: {e}", self.status),
        })?;
        let mut response = HttpResponse::new(self.body);
        *response.status_mut() = status;
        *response.headers_mut() = self.headers;
        Ok(response)
    }
}

/// The start of a body, on one line, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 200 {
        format!("{}...", one_line.chars().take(200).collect::<String>())
    } else {
        one_line
    }
}

impl Http {
    pub(crate) fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Http, LoginError> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .user_agent(concat!(
                "kube-authn-webhook-login/",
                env!("CARGO_PKG_VERSION")
            ));
        if let Some(path) = ca_file {
            let ca_err = |error: CaBundleError| LoginError::CaFile {
                path: path.to_owned(),
                error,
            };
            let pem = read_ca_bundle(path).map_err(ca_err)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ca_err(CaBundleError::Certificates(e)))?;
            // Like kubectl's certificate-authority: trust exactly these CAs.
            builder = builder.tls_certs_only(certs);
        }
        let client = builder.build().map_err(|e| {
            LoginError::Usage(format!(
                "cannot set up HTTPS: {}",
                kube_authn_common::error_chain(&e)
            ))
        })?;
        Ok(Http {
            client,
            ca_file: ca_file.map(Path::to_owned),
            timeout,
        })
    }

    pub(crate) async fn post_json(
        &self,
        service: Service,
        url: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Result<Reply, LoginError> {
        let mut req = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(service, url, req).await
    }

    /// Sends a request openidconnect built (Dex's token requests), with this
    /// client's limits, checks and error wording.
    pub(crate) async fn send_http(
        &self,
        service: Service,
        url: &str,
        mut request: HttpRequest,
    ) -> Result<Reply, LoginError> {
        // `send` sets Accept itself.
        request.headers_mut().remove(ACCEPT);
        let request = reqwest::Request::try_from(request).map_err(|e| {
            LoginError::Usage(format!(
                "cannot send a request to {url}: {}",
                kube_authn_common::error_chain(&e)
            ))
        })?;
        let req = reqwest::RequestBuilder::from_parts(self.client.clone(), request);
        self.send(service, url, req).await
    }

    pub(crate) async fn get(
        &self,
        service: Service,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, LoginError> {
        let mut req = self.client.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(service, url, req).await
    }

    async fn send(
        &self,
        service: Service,
        url: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<Reply, LoginError> {
        tracing::debug!(%service, %url, "request");
        let mut resp = req
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.classify(service, url, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(too_large(service, url));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.classify(service, url, &e))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large(service, url));
            }
            body.extend_from_slice(&chunk);
        }
        tracing::debug!(%service, %url, status, bytes = body.len(), "answer");
        if (300..400).contains(&status) {
            let to = headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?");
            return Err(LoginError::Http {
                service,
                url: url.to_owned(),
                status,
                detail: format!(": a redirect to {to}"),
                hint: "redirects are not followed (they would carry the password elsewhere): \
                       check --endpoint, it should be the https:// address the redirect names"
                    .to_owned(),
            });
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    fn classify(&self, service: Service, url: &str, e: &reqwest::Error) -> LoginError {
        let cause = cause_text(e);
        if e.is_timeout() {
            return LoginError::Timeout {
                service,
                url: url.to_owned(),
                limit: self.timeout,
            };
        }
        if is_tls(e, &cause) {
            let host = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| url.to_owned());
            let hint = match &self.ca_file {
                None => format!(
                    "if {host} uses a certificate from a private CA, pass --ca-file with that \
                     CA's PEM certificate"
                ),
                Some(p) => format!(
                    "--ca-file {} is in use: is it the CA that signed {host}'s certificate, and \
                     is {host} one of the certificate's names?",
                    p.display()
                ),
            };
            return LoginError::Tls {
                service,
                url: url.to_owned(),
                cause,
                hint,
            };
        }
        LoginError::Unreachable {
            service,
            url: url.to_owned(),
            cause,
        }
    }
}

/// The cause without reqwest's and hyper's wrappers, which repeat the URL
/// the message already names: "tcp connect error: Connection refused (os
/// error 111)", "invalid peer certificate: UnknownIssuer".
fn cause_text(e: &reqwest::Error) -> String {
    let mut text = kube_authn_common::error_chain(e);
    if let Some(url) = e.url() {
        text = text.replace(&format!("error sending request for url ({url}): "), "");
        text = text.replace(&format!("error sending request for url ({url})"), "");
    }
    for wrapper in ["client error (Connect): ", "client error (SendRequest): "] {
        text = text.replace(wrapper, "");
    }
    if text.trim().is_empty() {
        "no details".to_owned()
    } else {
        text
    }
}

fn too_large(service: Service, url: &str) -> LoginError {
    LoginError::BadResponse {
        service,
        url: url.to_owned(),
        why: format!(
            "an answer over {} KiB is not a token response",
            MAX_BODY_BYTES / 1024
        ),
    }
}

/// A TLS failure anywhere in the chain: a rustls error (possibly wrapped in
/// an io::Error, whose `source()` skips it), or a cause that says so.
fn is_tls(e: &reqwest::Error, text: &str) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        cur = err.source();
    }
    let lower = text.to_ascii_lowercase();
    ["certificate", "handshake", "tls"]
        .iter()
        .any(|w| lower.contains(w))
}

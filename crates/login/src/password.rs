//! Where the password comes from, and the type that carries it (and other
//! secrets: tokens, client secrets) without ever printing it.
//!
//! A password is read only when a full login is needed (no usable cached
//! token, refresh refused), is never taken from the command line (it would
//! show in `ps` and shell history), is never logged and never cached.

use std::fmt;
use std::io::Read;

use zeroize::Zeroizing;

use super::error::LoginError;

/// A secret string: `Debug` and `Display` print `***`, and the bytes are
/// zeroed when it is dropped (`zeroize`; best effort: copies made by
/// openidconnect's secret types and by the HTTP client's body encoding are
/// out of reach). Neither `Clone` nor `PartialEq`: a copy is a second
/// secret to wipe, and a comparison a timing side channel.
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The largest password accepted on stdin; anything longer is a mistake
/// (a file piped in by accident).
const MAX_STDIN_BYTES: u64 = 64 * 1024;

#[derive(Debug)]
pub enum PasswordSource {
    /// Ask on the terminal (`/dev/tty`), without echo.
    Prompt,
    /// No terminal and no flag: a login that needs a password fails with
    /// an explanation of the options.
    Unavailable,
    /// `--password-stdin`: everything on stdin, one trailing newline removed.
    Stdin,
    /// `--password-env NAME`.
    Env(String),
    /// A password the caller already holds (embedding, tests).
    Given(Secret),
}

impl PasswordSource {
    /// The source the command line asks for. `interactive` is what
    /// `KUBERNETES_EXEC_INFO` says (`spec.interactive`), or, when a person
    /// runs the command directly, whether stdin is a terminal.
    pub(crate) fn choose(stdin: bool, env: Option<String>, interactive: bool) -> PasswordSource {
        match (stdin, env) {
            (_, Some(name)) => PasswordSource::Env(name),
            (true, None) => PasswordSource::Stdin,
            (false, None) if interactive => PasswordSource::Prompt,
            (false, None) => PasswordSource::Unavailable,
        }
    }

    /// Reads the password. `prompt` names what it is for; `endpoint` and
    /// `user` go into error messages.
    pub(crate) fn read(
        &self,
        prompt: &str,
        endpoint: &str,
        user: &str,
    ) -> Result<Secret, LoginError> {
        let fail_with = |why: String, hint: &str| LoginError::NoPassword {
            endpoint: endpoint.to_owned(),
            user: user.to_owned(),
            why,
            hint: hint.to_owned(),
        };
        let fail = |why: String| {
            fail_with(
                why,
                "leave out --password-stdin and --password-env to be asked on the terminal",
            )
        };
        let secret = match self {
            // A second copy, wiped on drop like the first.
            PasswordSource::Given(s) => Secret::new(s.expose()),
            PasswordSource::Env(name) => match std::env::var(name) {
                Ok(v) => Secret::new(v),
                Err(std::env::VarError::NotPresent) => {
                    return Err(fail(format!(
                        "the environment variable {name} (--password-env) is not set"
                    )));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(fail(format!(
                        "the environment variable {name} (--password-env) is not valid UTF-8"
                    )));
                }
            },
            PasswordSource::Stdin => {
                let mut buf = String::new();
                std::io::stdin()
                    .take(MAX_STDIN_BYTES + 1)
                    .read_to_string(&mut buf)
                    .map_err(|e| {
                        fail(format!("stdin (--password-stdin) could not be read: {e}"))
                    })?;
                if buf.len() as u64 > MAX_STDIN_BYTES {
                    return Err(fail(format!(
                        "stdin (--password-stdin) holds more than {} KiB: pipe in the password only",
                        MAX_STDIN_BYTES / 1024
                    )));
                }
                let trimmed = buf
                    .strip_suffix('\n')
                    .map(|s| s.strip_suffix('\r').unwrap_or(s))
                    .unwrap_or(&buf);
                let secret = Secret::new(trimmed);
                drop(Secret::new(buf));
                secret
            }
            PasswordSource::Prompt => match rpassword::prompt_password(prompt) {
                Ok(p) => Secret::new(p),
                Err(e) => {
                    return Err(fail_with(
                        format!("the terminal could not be read ({e})"),
                        "pass --password-stdin or --password-env NAME",
                    ));
                }
            },
            PasswordSource::Unavailable => {
                let under_kubectl = std::env::var_os("KUBERNETES_EXEC_INFO").is_some();
                return Err(if under_kubectl {
                    fail_with(
                        "kubectl ran this plugin without a terminal".to_owned(),
                        "log in once from a terminal (run a kubectl command there, or this \
                         `kube-authn-login ...` command), or add --password-env NAME to \
                         the plugin's args",
                    )
                } else {
                    fail_with(
                        "stdin is not a terminal".to_owned(),
                        "pass --password-stdin (and pipe the password in) or --password-env NAME",
                    )
                });
            }
        };
        if secret.is_empty() {
            return Err(fail("the password given is empty".to_owned()));
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_format_their_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn the_flag_wins_over_the_terminal() {
        assert!(matches!(
            PasswordSource::choose(false, Some("PW".into()), true),
            PasswordSource::Env(n) if n == "PW"
        ));
        assert!(matches!(
            PasswordSource::choose(true, None, true),
            PasswordSource::Stdin
        ));
        assert!(matches!(
            PasswordSource::choose(false, None, true),
            PasswordSource::Prompt
        ));
        assert!(matches!(
            PasswordSource::choose(false, None, false),
            PasswordSource::Unavailable
        ));
    }

    #[test]
    fn a_missing_env_var_is_named() {
        let e = PasswordSource::Env("KAW_TEST_SURELY_UNSET_1234".into())
            .read("p", "https://du", "jane")
            .unwrap_err()
            .to_string();
        assert!(e.contains("KAW_TEST_SURELY_UNSET_1234"), "{e}");
        assert!(e.contains("jane"), "{e}");
    }

    #[test]
    fn an_empty_password_is_refused() {
        let e = PasswordSource::Given(Secret::new(""))
            .read("p", "https://du", "jane")
            .unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }
}

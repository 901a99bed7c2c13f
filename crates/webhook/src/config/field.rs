//! Where in a config file a problem is: a typed path (`issuers[1] (dex).url`,
//! after Kubernetes' `field.Path`), built as validation descends, so code
//! that asks "was there a problem under this field?" compares paths instead
//! of scanning strings.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Step>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(usize),
    /// The name of a list entry, shown after its index: `issuers[0] (dex)`.
    Named(String),
    /// Another file the config names, as written: `auth.yaml: jwt[0]...`.
    File(String),
}

impl FieldPath {
    /// The file itself (problems such as "not valid YAML").
    pub(crate) fn root() -> FieldPath {
        FieldPath::default()
    }

    /// A path of plain field names as written in the YAML, for the fixed
    /// parts of the file: `at("server.tls.cert_file")`.
    pub(crate) fn at(dotted: &str) -> FieldPath {
        FieldPath(
            dotted
                .split('.')
                .map(|f| Step::Field(f.to_owned()))
                .collect(),
        )
    }

    /// The root of a file the config names (an AuthenticationConfiguration).
    pub(crate) fn file(name: &str) -> FieldPath {
        FieldPath(vec![Step::File(name.to_owned())])
    }

    pub(crate) fn field(&self, name: &str) -> FieldPath {
        self.with(Step::Field(name.to_owned()))
    }

    pub(crate) fn index(&self, i: usize) -> FieldPath {
        self.with(Step::Index(i))
    }

    pub(crate) fn named(&self, name: &str) -> FieldPath {
        self.with(Step::Named(name.to_owned()))
    }

    /// True when `self` is `prefix` or lies below it.
    pub(crate) fn starts_with(&self, prefix: &FieldPath) -> bool {
        self.0.starts_with(&prefix.0)
    }

    fn with(&self, step: Step) -> FieldPath {
        let mut steps = self.0.clone();
        steps.push(step);
        FieldPath(steps)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            let after_file = i > 0 && matches!(self.0[i - 1], Step::File(_));
            match step {
                Step::File(name) => f.write_str(name)?,
                Step::Field(name) if after_file => write!(f, ": {name}")?,
                Step::Field(name) if i == 0 => f.write_str(name)?,
                Step::Field(name) => write!(f, ".{name}")?,
                Step::Index(n) => write!(f, "[{n}]")?,
                Step::Named(name) => write!(f, " ({name})")?,
            }
        }
        Ok(())
    }
}

/// One problem: where, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: FieldPath,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == FieldPath::root() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Every problem found in one config file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "config file {}: {} problem{}",
            self.file.display(),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects problems as validation (and preparation) walks the config.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    pub(crate) fn add(&mut self, field: &FieldPath, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.clone(),
            message: message.into(),
        });
    }

    /// Whether any problem so far lies at or below `field`.
    pub(crate) fn any_under(&self, field: &FieldPath) -> bool {
        self.0.iter().any(|p| p.field.starts_with(field))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// `value` when no problem was found, else every problem of `file`.
    pub(crate) fn or_value<T>(self, value: T, file: &std::path::Path) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                file: file.to_owned(),
                problems: self.0,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_as_the_yaml_does() {
        let issuer = FieldPath::root().field("issuers").index(2).named("efa");
        assert_eq!(
            issuer
                .field("keys")
                .field("public_key_files")
                .index(0)
                .to_string(),
            "issuers[2] (efa).keys.public_key_files[0]"
        );
        assert!(
            issuer
                .field("keys")
                .index(0)
                .starts_with(&issuer.field("keys"))
        );
        assert!(!issuer.field("claims").starts_with(&issuer.field("keys")));
        assert_eq!(FieldPath::root().to_string(), "");
        assert_eq!(
            FieldPath::file("auth.yaml")
                .field("jwt")
                .index(0)
                .field("claimMappings")
                .to_string(),
            "auth.yaml: jwt[0].claimMappings"
        );
    }
}

//! What `explain` is told about each check a review makes. The review code
//! records into a `Trace` as it goes, so `explain` reports the checks `serve`
//! runs, in their order, with the refusals' own messages; `serve` passes
//! `Trace::off()`, which records nothing and never formats a detail.

use std::fmt::Display;

/// One check: its name, how it came out, and what it looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub check: &'static str,
    pub outcome: Outcome,
    pub detail: String,
    /// A failed check's message: the refusal's own, as the log carries it.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    /// Not a check: something seen or done on the way (the header, a fetch).
    Note,
}

#[derive(Debug, Default)]
pub struct Trace {
    steps: Option<Vec<Step>>,
}

impl Trace {
    /// Records nothing: the service's reviews.
    pub fn off() -> Trace {
        Trace { steps: None }
    }

    /// Records every check.
    pub fn on() -> Trace {
        Trace {
            steps: Some(Vec::new()),
        }
    }

    pub fn steps(&self) -> &[Step] {
        self.steps.as_deref().unwrap_or_default()
    }

    /// Records `result` as check `check`: `detail` says what was looked at;
    /// a failure adds the error's message (the one the log and the answer
    /// carry). Returns `result` unchanged.
    pub(crate) fn step<T, E: Display>(
        &mut self,
        check: &'static str,
        detail: impl FnOnce() -> String,
        result: Result<T, E>,
    ) -> Result<T, E> {
        if let Some(steps) = &mut self.steps {
            let detail = detail();
            let (outcome, error) = match &result {
                Ok(_) => (Outcome::Passed, None),
                Err(e) => (Outcome::Failed, Some(e.to_string())),
            };
            // A check that passes with nothing to say is not worth a line.
            if outcome == Outcome::Failed || !detail.is_empty() {
                steps.push(Step {
                    check,
                    outcome,
                    detail,
                    error,
                });
            }
        }
        result
    }

    /// A fact that is not a check (e.g. a key fetch made on the way).
    pub(crate) fn note(&mut self, check: &'static str, detail: impl FnOnce() -> String) {
        if let Some(steps) = &mut self.steps {
            steps.push(Step {
                check,
                outcome: Outcome::Note,
                detail: detail(),
                error: None,
            });
        }
    }
}

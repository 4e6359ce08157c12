//! Validated names. Anything that reaches storage as a name has passed through
//! one of these constructors, so storage never sees an empty queue name or a
//! 10 MB idempotency key.

use std::fmt;

/// Why a name was refused; the message is safe to show to API clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {problem}")]
pub struct InvalidName {
    pub what: &'static str,
    pub problem: String,
}

fn check(
    what: &'static str,
    value: &str,
    max_len: usize,
    allowed: impl Fn(char) -> bool,
    allowed_text: &str,
) -> Result<(), InvalidName> {
    if value.is_empty() {
        return Err(InvalidName {
            what,
            problem: "must not be empty".into(),
        });
    }
    if value.len() > max_len {
        return Err(InvalidName {
            what,
            problem: format!("must be at most {max_len} bytes"),
        });
    }
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(InvalidName {
            what,
            problem: format!("contains {bad:?}; allowed are {allowed_text}"),
        });
    }
    Ok(())
}

fn identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr, $allowed:expr, $allowed_text:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The longest accepted value, in bytes.
            pub const MAX_LEN: usize = $max;

            pub fn new(value: impl Into<String>) -> Result<Self, InvalidName> {
                let value = value.into();
                check($what, &value, Self::MAX_LEN, $allowed, $allowed_text)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A queue: 1–128 bytes of ASCII letters, digits and `-_.:`.
    QueueName, "queue", 128, identifier_char, "ASCII letters, digits and -_.:"
);
name_type!(
    /// A tenant's name: 1–64 bytes of ASCII letters, digits and `-_.:`.
    TenantName, "tenant name", 64, identifier_char, "ASCII letters, digits and -_.:"
);
name_type!(
    /// A worker's self-chosen identity, shown in attempt history: 1–128 printable ASCII bytes.
    WorkerId, "worker_id", 128, |c: char| c.is_ascii_graphic(), "printable ASCII without spaces"
);
name_type!(
    /// A workflow step's name, unique within its job: 1–128 bytes of ASCII letters, digits and `-_.:`.
    StepName, "step name", 128, identifier_char, "ASCII letters, digits and -_.:"
);
name_type!(
    /// A signal's name: 1–128 bytes of ASCII letters, digits and `-_.:`.
    SignalName, "signal name", 128, identifier_char, "ASCII letters, digits and -_.:"
);
name_type!(
    /// What a job's flow rules count it under, e.g. a customer or account id:
    /// 1–128 bytes of UTF-8 without control characters.
    FlowKey, "flow_key", 128, |c: char| !c.is_control(), "any character but control characters"
);
name_type!(
    /// The downstream a job calls (e.g. `stripe`), whose limits and circuit
    /// breaker the job is held to: 1–128 bytes of ASCII letters, digits and `-_.:`.
    ResourceName, "resource", 128, identifier_char, "ASCII letters, digits and -_.:"
);
name_type!(
    /// A schedule's name, unique within its tenant: 1–128 bytes of ASCII
    /// letters, digits and `-_.:`.
    ScheduleName, "schedule name", 128, identifier_char, "ASCII letters, digits and -_.:"
);
name_type!(
    /// A producer that numbers what it sends (an edge collector): 1–128
    /// bytes of ASCII letters, digits and `-_.:`.
    ProducerId, "producer.id", 128, identifier_char, "ASCII letters, digits and -_.:"
);
name_type!(
    /// A producer-chosen idempotency key: 1–255 printable ASCII bytes.
    IdempotencyKey, "idempotency_key", 255, |c: char| c.is_ascii_graphic(), "printable ASCII without spaces"
);

/// Why an operator acted, kept in the audit record with the actor: 1–1000
/// bytes of text, trimmed, with no control characters but tabs and line
/// breaks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reason(String);

impl Reason {
    /// The longest accepted value, in bytes.
    pub const MAX_LEN: usize = 1000;

    pub fn new(value: &str) -> Result<Self, InvalidName> {
        let value = value.trim();
        let allowed = |c: char| !c.is_control() || matches!(c, '\n' | '\r' | '\t');
        check(
            "reason",
            value,
            Self::MAX_LEN,
            allowed,
            "text without control characters",
        )?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names_and_refuses_bad_ones() {
        assert!(QueueName::new("emails.send:v2").is_ok());
        assert_eq!(QueueName::new("").unwrap_err().problem, "must not be empty");
        assert!(QueueName::new("a b").is_err());
        assert!(QueueName::new("x".repeat(129)).is_err());
        assert!(QueueName::new("x".repeat(128)).is_ok());
        assert!(IdempotencyKey::new("order-42/charge").is_ok());
        assert!(IdempotencyKey::new("tab\there").is_err());
        assert!(WorkerId::new("host-1:pid-77").is_ok());
        assert!(FlowKey::new("customer 42 / Zürich").is_ok());
        assert!(FlowKey::new("nul\0byte").is_err());
        assert!(FlowKey::new("é".repeat(65)).is_err());
        assert!(ResourceName::new("stripe").is_ok());
        assert!(ResourceName::new("stripe/eu").is_err());
        assert_eq!(Reason::new("  customer asked\n").unwrap().as_str(), "customer asked");
        assert_eq!(Reason::new(" \t ").unwrap_err().problem, "must not be empty");
        assert!(Reason::new("bell\u{7}").is_err());
        assert!(Reason::new(&"x".repeat(1001)).is_err());
    }
}

//! The institution's rules as numbers, with the published defaults.

use serde::{Deserialize, Serialize};

crate::settings::section! {
    /// `[policy]`: the institution's rules, as numbers. The defaults are the published process:
    /// tokens live at most 120 days, links work 7 days.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Policy in "policy" {
        /// A token lives at most this many days after it is created; a requester may ask for
        /// an earlier expiry, and an approver may shorten it.
        max_lifetime_days: u32 = 120, in 1..=3650;
        /// A delivery link works this many days after it is sent; at most `max_lifetime_days`.
        link_ttl_days: u32 = 7, in 1..=90;
        /// How many times the owner may reveal the value from the delivery page.
        max_reveals: u32 = 3, in 1..=100;
        /// The purpose must say at least this much (characters).
        purpose_min_chars: u32 = 20, in 0..=1000;
        /// Requests a person may have waiting (submitted, approved or failed) at once.
        max_open_requests_per_person: u32 = 1, in 1..=1000;
        /// Live tokens (issued or activated) a person may hold at once.
        max_active_tokens_per_person: u32 = 2, in 1..=1000;
        /// A token not activated in Canvas this many days after it was issued (or whose link
        /// expired unrevealed) is deleted there and its request ends `expired`; the owner is
        /// told how to ask again.
        activation_grace_days: u32 = 14, in 1..=365;
        /// Days before a token's expiry on which its owner is reminded (each once).
        reminder_days: ReminderDays = ReminderDays::DEFAULT;
        /// Delete a token in Canvas when it expires (Canvas otherwise keeps listing it).
        delete_expired: bool = true;
        /// What an approved renewal does: `new` creates a new token (the 120-day rule counts
        /// from each token's creation), `extend` moves the expiry of the same token in Canvas.
        renewal: RenewalMode = RenewalMode::New;
        /// Warn the owner of an active token unused in Canvas for this many days, and revoke it
        /// seven days after the warning if it is still unused; `0` turns this off.
        revoke_unused_days: u32 = 0, in 0..=3650;
    }
}

/// What an approved renewal does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenewalMode {
    /// A new token, delivered in a new envelope; the old one works until the new one is
    /// activated (or it expires), then it is deleted in Canvas.
    New,
    /// The same token's expiry is moved in Canvas; no new secret.
    Extend,
}

crate::config::choices!(RenewalMode { "new" => New, "extend" => Extend });

/// Days before expiry to remind on: at most four, each from 1 to 365, largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u16>", into = "Vec<u16>")]
pub struct ReminderDays {
    days: [u16; ReminderDays::MOST],
    len: u8,
}

impl ReminderDays {
    /// The most reminders per token.
    pub const MOST: usize = 4;
    /// Two weeks and three days before.
    pub const DEFAULT: ReminderDays = ReminderDays {
        days: [14, 3, 0, 0],
        len: 2,
    };

    /// The days, largest first.
    pub fn days(&self) -> &[u16] {
        &self.days[..usize::from(self.len)]
    }

    /// From a list: each from 1 to 365, at most four; sorted largest first, repeats dropped.
    pub fn new(days: &[u64]) -> Result<ReminderDays, String> {
        let mut sorted: Vec<u16> = Vec::new();
        for &d in days {
            let d = u16::try_from(d)
                .ok()
                .filter(|d| (1..=365).contains(d))
                .ok_or_else(|| format!("each day must be from 1 to 365, not {d}"))?;
            if !sorted.contains(&d) {
                sorted.push(d);
            }
        }
        if sorted.len() > Self::MOST {
            return Err(format!(
                "at most {} reminders, not {}",
                Self::MOST,
                sorted.len()
            ));
        }
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = ReminderDays {
            days: [0; Self::MOST],
            len: 0,
        };
        for (slot, d) in out.days.iter_mut().zip(&sorted) {
            *slot = *d;
        }
        out.len = u8::try_from(sorted.len()).unwrap_or(0);
        Ok(out)
    }
}

impl TryFrom<Vec<u16>> for ReminderDays {
    type Error = String;
    fn try_from(days: Vec<u16>) -> Result<Self, String> {
        let days: Vec<u64> = days.into_iter().map(u64::from).collect();
        ReminderDays::new(&days)
    }
}

impl From<ReminderDays> for Vec<u16> {
    fn from(r: ReminderDays) -> Self {
        r.days().to_vec()
    }
}

impl crate::settings::Setting for ReminderDays {
    fn kind() -> String {
        "list of days (1–365, at most 4)".to_owned()
    }
    fn show(&self) -> String {
        let days: Vec<String> = self.days().iter().map(u16::to_string).collect();
        format!("`[{}]`", days.join(", "))
    }
    fn parse(found: crate::settings::Found<'_>) -> Result<Self, crate::settings::Problem> {
        use crate::settings::Problem;
        use figment::value::Value;
        let numbers: Vec<u64> = match found.value {
            Value::Array(_, items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Num(_, n) => {
                        n.to_i128()
                            .and_then(|n| u64::try_from(n).ok())
                            .ok_or_else(|| {
                                Problem::Type(format!("item {} is not a whole number", i + 1))
                            })
                    }
                    other => Err(Problem::Type(format!(
                        "expected a list of whole numbers, but item {} is {}",
                        i + 1,
                        crate::settings::type_name(other)
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Value::String(_, s) if found.from_env => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<u64>()
                        .map_err(|_| Problem::Type(format!("`{s}` is not a whole number")))
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(Problem::Type(format!(
                    "expected a list of days such as [14, 3], found {}",
                    crate::settings::type_name(other)
                )));
            }
        };
        ReminderDays::new(&numbers).map_err(Problem::Invalid)
    }
}

impl Policy {
    /// Problems between these values (each one's range is checked as it is read), as (field
    /// name, message); empty when valid.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.link_ttl_days > self.max_lifetime_days {
            problems.push((
                "link_ttl_days",
                format!(
                    "must not exceed max_lifetime_days ({}); got {}",
                    self.max_lifetime_days, self.link_ttl_days
                ),
            ));
        }
        problems
    }

    /// `max_lifetime_days` as a duration.
    pub fn max_lifetime(&self) -> time::Duration {
        time::Duration::days(i64::from(self.max_lifetime_days))
    }

    /// `activation_grace_days` as a duration.
    pub fn activation_grace(&self) -> time::Duration {
        time::Duration::days(i64::from(self.activation_grace_days))
    }

    /// `link_ttl_days` as a duration.
    pub fn link_ttl(&self) -> time::Duration {
        time::Duration::days(i64::from(self.link_ttl_days))
    }
}

/// The longest purpose accepted (Canvas's own column holds 255 characters, and tokendesk adds
/// a `tokendesk #<id>: ` prefix).
pub const PURPOSE_MAX_CHARS: usize = 200;
/// The longest application name accepted.
pub const APPLICATION_MAX_CHARS: usize = 100;
/// The longest reason (denial, revocation) accepted.
pub const REASON_MAX_CHARS: usize = 1000;

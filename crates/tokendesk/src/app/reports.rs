//! Reports for admins and auditors (`/reports`): how requests and tokens have gone, as numbers
//! ready for a chart, a table and a CSV file. Every window is measured from the app's clock;
//! weeks begin on Monday and days at midnight, UTC.
//!
//! [`Chart`] is the one list of reports: the page, its routes (`/reports/{slug}.csv`, and
//! `.svg` for those drawn) and the tests are derived from it.

use std::collections::HashMap;

use sqlx::AnyConnection;
use time::{Date, Duration, OffsetDateTime};

use super::{App, AppResult};
use crate::domain::request::RequestState;
use crate::domain::{Actor, DomainError};
use crate::store::{self, Span};

/// The reports, in the order the page shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chart {
    /// Requests made per week, by the state they are in now.
    RequestsPerWeek,
    /// Tokens live at the end of each of the last 30 days.
    LiveTokens,
    /// Hours from request to approval and from approval to activation, per week.
    TimeToToken,
    /// Live tokens expiring on each of the next 30 days.
    ExpiringSoon,
    /// Requests waiting for a decision, by how long they have waited.
    WaitingByAge,
    /// Delivery links that expired without being opened, per week.
    UnopenedLinks,
    /// Requests per month by purpose and state: a table for the institution's review.
    PurposesByMonth,
}

/// How a report is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drawing {
    /// One bar per row, its plotted columns stacked.
    StackedBars,
    /// One bar per row (one plotted column).
    Bars,
    /// One line per plotted column.
    Lines,
    /// Not drawn: the table is the report.
    TableOnly,
}

impl Chart {
    pub const ALL: [Chart; 7] = [
        Chart::RequestsPerWeek,
        Chart::LiveTokens,
        Chart::TimeToToken,
        Chart::ExpiringSoon,
        Chart::WaitingByAge,
        Chart::UnopenedLinks,
        Chart::PurposesByMonth,
    ];

    /// Its name in addresses and file names.
    pub fn slug(self) -> &'static str {
        match self {
            Chart::RequestsPerWeek => "requests-per-week",
            Chart::LiveTokens => "live-tokens",
            Chart::TimeToToken => "time-to-token",
            Chart::ExpiringSoon => "expiring-soon",
            Chart::WaitingByAge => "waiting-by-age",
            Chart::UnopenedLinks => "unopened-links",
            Chart::PurposesByMonth => "purposes-by-month",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Chart::RequestsPerWeek => "Requests per week, by outcome",
            Chart::LiveTokens => "Live tokens, last 30 days",
            Chart::TimeToToken => "Time from request to approval and from approval to activation",
            Chart::ExpiringSoon => "Tokens expiring in the next 30 days",
            Chart::WaitingByAge => "Waiting requests, by age",
            Chart::UnopenedLinks => "Delivery links never opened, per week",
            Chart::PurposesByMonth => "Monthly summary by purpose",
        }
    }

    pub fn drawing(self) -> Drawing {
        match self {
            Chart::RequestsPerWeek => Drawing::StackedBars,
            Chart::LiveTokens | Chart::TimeToToken => Drawing::Lines,
            Chart::ExpiringSoon | Chart::WaitingByAge | Chart::UnopenedLinks => Drawing::Bars,
            Chart::PurposesByMonth => Drawing::TableOnly,
        }
    }

    pub fn from_slug(slug: &str) -> Option<Chart> {
        Chart::ALL.into_iter().find(|c| c.slug() == slug)
    }
}

/// What a column's numbers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    /// Hours, shown to one decimal.
    Hours,
}

/// A column of numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub unit: Unit,
    /// Drawn in the chart (a total or a count behind a percentile is only in the table).
    pub plotted: bool,
}

/// A row: its labels (a week, a day, an age; a month and a purpose), then one value per
/// column (`None`: nothing to measure, e.g. a percentile of no approvals).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub labels: Vec<String>,
    pub values: Vec<Option<f64>>,
}

/// One report's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportData {
    pub chart: Chart,
    /// The headers of the label columns (the first names the chart's axis of rows).
    pub label_columns: Vec<&'static str>,
    pub columns: Vec<Column>,
    pub rows: Vec<ReportRow>,
    /// What the numbers say, in a sentence or two (the chart's text alternative).
    pub summary: String,
    /// What the value axis counts or measures.
    pub axis: &'static str,
    /// When the numbers were read (the app's clock).
    pub as_of: OffsetDateTime,
}

/// A value as tables and CSV files show it (empty when there is none).
pub fn format_value(value: Option<f64>, unit: Unit) -> String {
    match (value, unit) {
        (None, _) => String::new(),
        (Some(v), Unit::Count) => format!("{v:.0}"),
        (Some(v), Unit::Hours) => format!("{v:.1}"),
    }
}

impl ReportData {
    /// Every column's header, labels first.
    pub fn header(&self) -> Vec<String> {
        self.label_columns
            .iter()
            .map(|s| (*s).to_owned())
            .chain(self.columns.iter().map(|c| c.name.clone()))
            .collect()
    }

    /// A row's values, formatted.
    pub fn cells(&self, row: &ReportRow) -> Vec<String> {
        row.values
            .iter()
            .zip(&self.columns)
            .map(|(v, c)| format_value(*v, c.unit))
            .collect()
    }

    /// The report as CSV (RFC 4180, CRLF line ends): the header, then one line per row.
    pub fn csv(&self) -> String {
        let line = |cells: Vec<String>| {
            cells
                .iter()
                .map(|c| store::csv_cell(c))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut out = line(self.header());
        out.push_str("\r\n");
        for row in &self.rows {
            let cells = row.labels.iter().cloned().chain(self.cells(row)).collect();
            out.push_str(&line(cells));
            out.push_str("\r\n");
        }
        out
    }
}

/// Weeks in the weekly reports (the current one last).
pub const WEEKS: i64 = 12;
/// Days in the daily reports.
pub const DAYS: i64 = 30;
/// Months in the monthly summary (the current one last).
pub const MONTHS: i64 = 12;

/// The age buckets of waiting requests: label, and the ages `[from, to)` in days.
pub const AGES: [(&str, i64, Option<i64>); 4] = [
    ("under 1 day", 0, Some(1)),
    ("1 to 3 days", 1, Some(3)),
    ("3 to 7 days", 3, Some(7)),
    ("over 7 days", 7, None),
];

fn midnight(day: Date) -> OffsetDateTime {
    day.midnight().assume_utc()
}

/// The Monday beginning the week of `day`.
fn monday_of(day: Date) -> Date {
    day - Duration::days(i64::from(day.weekday().number_days_from_monday()))
}

/// The last [`WEEKS`] weeks, the current one last: (its Monday, the week).
fn weeks(now: OffsetDateTime) -> Vec<(Date, Span)> {
    let this = monday_of(now.date());
    (0..WEEKS)
        .rev()
        .map(|ago| {
            let monday = this - Duration::weeks(ago);
            let span = Span {
                from: midnight(monday),
                to: midnight(monday + Duration::weeks(1)),
            };
            (monday, span)
        })
        .collect()
}

/// The first day of the month `back` months before `day`'s.
fn month_start(day: Date, back: i64) -> Date {
    let index = i64::from(day.year()) * 12 + i64::from(u8::from(day.month())) - 1 - back;
    let year = i32::try_from(index.div_euclid(12)).unwrap_or(day.year());
    let month = u8::try_from(index.rem_euclid(12) + 1)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .unwrap_or(day.month());
    Date::from_calendar_date(year, month, 1).unwrap_or(day)
}

/// The last [`MONTHS`] months, the current one last: (`YYYY-MM`, the month).
fn months(now: OffsetDateTime) -> Vec<(String, Span)> {
    let today = now.date();
    (0..MONTHS)
        .rev()
        .map(|back| {
            let first = month_start(today, back);
            let next = month_start(today, back - 1);
            let label = format!("{}-{:02}", first.year(), u8::from(first.month()));
            (
                label,
                Span {
                    from: midnight(first),
                    to: midnight(next),
                },
            )
        })
        .collect()
}

/// The median and the 90th percentile of `samples` (linear interpolation between the closest
/// ranks, as PostgreSQL's `percentile_cont`); `None` for no samples.
pub fn median_and_p90(samples: &mut [f64]) -> (Option<f64>, Option<f64>) {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| -> Option<f64> {
        let last = samples.len().checked_sub(1)?;
        let pos = p * last as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        let (a, b) = (*samples.get(lo)?, *samples.get(hi)?);
        Some(a + (b - a) * (pos - lo as f64))
    };
    (at(0.5), at(0.9))
}

fn hours(d: Duration) -> f64 {
    d.as_seconds_f64() / 3600.0
}

fn count(n: i64) -> Option<f64> {
    Some(n as f64)
}

/// `1 request`, `2 requests`.
fn things(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `a, b and c`.
fn listed(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn hours_text(h: Option<f64>) -> String {
    h.map_or_else(String::new, |h| format!("{h:.1} hours"))
}

/// The row with the largest value in column `col` (the first of equals), with that value.
fn peak(rows: &[ReportRow], col: usize) -> Option<(&ReportRow, f64)> {
    rows.iter()
        .filter_map(|r| r.values.get(col).copied().flatten().map(|v| (r, v)))
        .fold(None, |best, (r, v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((r, v)),
        })
}

fn label(row: &ReportRow) -> &str {
    row.labels.first().map_or("", String::as_str)
}

fn counted(name: &str) -> Column {
    Column {
        name: name.to_owned(),
        unit: Unit::Count,
        plotted: true,
    }
}

/// One report, read from the database as of `now`.
async fn build(
    conn: &mut AnyConnection,
    chart: Chart,
    now: OffsetDateTime,
) -> AppResult<ReportData> {
    let mut data = ReportData {
        chart,
        label_columns: Vec::new(),
        columns: Vec::new(),
        rows: Vec::new(),
        summary: String::new(),
        axis: "",
        as_of: now,
    };
    let today = now.date();
    match chart {
        Chart::RequestsPerWeek => {
            let weeks = weeks(now);
            let spans: Vec<Span> = weeks.iter().map(|(_, s)| *s).collect();
            let found = store::requests_made_in(conn, &spans).await?;
            let states = RequestState::ALL;
            data.label_columns = vec!["Week starting"];
            data.columns = states.iter().map(|s| counted(s.as_str())).collect();
            data.columns.push(Column {
                plotted: false,
                ..counted("total")
            });
            let mut totals = [0i64; RequestState::ALL.len()];
            for (k, (monday, _)) in weeks.iter().enumerate() {
                let mut values = vec![0i64; states.len()];
                for (_, state, n) in found.iter().filter(|(at, _, _)| *at == k) {
                    if let Some(i) = states.iter().position(|s| s == state) {
                        values[i] += n;
                        totals[i] += n;
                    }
                }
                let total: i64 = values.iter().sum();
                data.rows.push(ReportRow {
                    labels: vec![monday.to_string()],
                    values: values.into_iter().chain([total]).map(count).collect(),
                });
            }
            let total: i64 = totals.iter().sum();
            let first = weeks.first().map(|(d, _)| *d).unwrap_or(today);
            data.axis = "requests";
            data.summary = if total == 0 {
                format!("No requests were made in the {WEEKS} weeks from {first} to {today}.")
            } else {
                let parts: Vec<String> = states
                    .iter()
                    .zip(totals)
                    .filter(|(_, n)| *n > 0)
                    .map(|(s, n)| format!("{n} {s}"))
                    .collect();
                let busiest = peak(&data.rows, states.len())
                    .map(|(r, v)| format!(" The busiest week began {}, with {v:.0}.", label(r)))
                    .unwrap_or_default();
                format!(
                    "{} were made in the {WEEKS} weeks from {first} to {today}; by their state now: {}.{busiest}",
                    things(total, "request", "requests"),
                    listed(&parts),
                )
            };
        }
        Chart::LiveTokens => {
            let days: Vec<Date> = (0..DAYS)
                .rev()
                .map(|ago| today - Duration::days(ago))
                .collect();
            let spans: Vec<Span> = days
                .iter()
                .map(|d| Span {
                    from: midnight(*d),
                    to: midnight(*d + Duration::days(1)).min(now),
                })
                .collect();
            let counts = store::live_tokens_at(conn, &spans).await?;
            data.label_columns = vec!["Day"];
            data.columns = vec![counted("live tokens")];
            data.rows = days
                .iter()
                .zip(&counts)
                .map(|(d, n)| ReportRow {
                    labels: vec![d.to_string()],
                    values: vec![count(*n)],
                })
                .collect();
            let latest = counts.last().copied().unwrap_or(0);
            let min = counts.iter().copied().min().unwrap_or(0);
            let max = counts.iter().copied().max().unwrap_or(0);
            data.axis = "tokens";
            let live = things(latest, "token is", "tokens are");
            data.summary = if min == max {
                format!("{live} live now, as at the end of each of the last {DAYS} days.")
            } else {
                format!(
                    "{live} live now; at the end of each of the last {DAYS} days there were between {min} and {max}."
                )
            };
        }
        Chart::TimeToToken => {
            let weeks = weeks(now);
            let spans: Vec<Span> = weeks.iter().map(|(_, s)| *s).collect();
            let approvals = store::approvals_in(conn, &spans).await?;
            let activations = store::activations_in(conn, &spans).await?;
            data.label_columns = vec!["Week starting"];
            data.columns = vec![
                Column {
                    plotted: false,
                    ..counted("approved")
                },
                Column {
                    name: "median hours to approval".into(),
                    unit: Unit::Hours,
                    plotted: true,
                },
                Column {
                    name: "90th percentile hours to approval".into(),
                    unit: Unit::Hours,
                    plotted: true,
                },
                Column {
                    plotted: false,
                    ..counted("activated")
                },
                Column {
                    name: "median hours from approval to activation".into(),
                    unit: Unit::Hours,
                    plotted: true,
                },
                Column {
                    name: "90th percentile hours from approval to activation".into(),
                    unit: Unit::Hours,
                    plotted: true,
                },
            ];
            let waits = |k: usize, pairs: &[(usize, OffsetDateTime, OffsetDateTime)]| {
                pairs
                    .iter()
                    .filter(|(at, _, _)| *at == k)
                    .map(|(_, a, b)| hours(*b - *a))
                    .collect::<Vec<f64>>()
            };
            for (k, (monday, _)) in weeks.iter().enumerate() {
                let mut to_approval = waits(k, &approvals);
                let mut to_activation = waits(k, &activations);
                let (a50, a90) = median_and_p90(&mut to_approval);
                let (b50, b90) = median_and_p90(&mut to_activation);
                data.rows.push(ReportRow {
                    labels: vec![monday.to_string()],
                    values: vec![
                        count(to_approval.len() as i64),
                        a50,
                        a90,
                        count(to_activation.len() as i64),
                        b50,
                        b90,
                    ],
                });
            }
            let all = |pairs: &[(usize, OffsetDateTime, OffsetDateTime)]| {
                pairs
                    .iter()
                    .map(|(_, a, b)| hours(*b - *a))
                    .collect::<Vec<f64>>()
            };
            let (mut to_approval, mut to_activation) = (all(&approvals), all(&activations));
            let (a50, a90) = median_and_p90(&mut to_approval);
            let (b50, b90) = median_and_p90(&mut to_activation);
            let approved = match to_approval.len() as i64 {
                0 => "no request was approved".to_owned(),
                n => format!(
                    "{} approved a median of {} after they were made (90th percentile: {})",
                    things(n, "request was", "requests were"),
                    hours_text(a50),
                    hours_text(a90)
                ),
            };
            let activated = match to_activation.len() as i64 {
                0 => "no token was activated".to_owned(),
                n => format!(
                    "{} activated a median of {} after approval (90th percentile: {})",
                    things(n, "token was", "tokens were"),
                    hours_text(b50),
                    hours_text(b90)
                ),
            };
            data.axis = "hours";
            data.summary = format!("In the last {WEEKS} weeks {approved}; {activated}.");
        }
        Chart::ExpiringSoon => {
            let days: Vec<Date> = (0..DAYS).map(|d| today + Duration::days(d)).collect();
            let spans: Vec<Span> = days
                .iter()
                .map(|d| Span {
                    from: midnight(*d),
                    to: midnight(*d + Duration::days(1)),
                })
                .collect();
            let found = store::tokens_expiring_in(conn, &spans, now).await?;
            data.label_columns = vec!["Day"];
            data.columns = vec![counted("tokens expiring")];
            data.rows = days
                .iter()
                .enumerate()
                .map(|(k, d)| ReportRow {
                    labels: vec![d.to_string()],
                    values: vec![count(
                        found
                            .iter()
                            .filter(|(at, _)| *at == k)
                            .map(|(_, n)| n)
                            .sum(),
                    )],
                })
                .collect();
            let total: i64 = found.iter().map(|(_, n)| n).sum();
            let last = days.last().copied().unwrap_or(today);
            data.axis = "tokens";
            data.summary = if total == 0 {
                format!("No tokens expire in the next {DAYS} days ({today} to {last}).")
            } else {
                let most = peak(&data.rows, 0)
                    .map(|(r, v)| format!("; the most on {}: {v:.0}", label(r)))
                    .unwrap_or_default();
                format!(
                    "{} in the next {DAYS} days ({today} to {last}){most}.",
                    things(total, "token expires", "tokens expire"),
                )
            };
        }
        Chart::WaitingByAge => {
            let spans: Vec<Span> = AGES
                .iter()
                .map(|(_, from, to)| Span {
                    // Made more than `from` days ago (and at most `to`): ages [from, to).
                    from: to.map_or(OffsetDateTime::UNIX_EPOCH, |to| {
                        now - Duration::days(to) + Duration::SECOND
                    }),
                    to: now - Duration::days(*from) + Duration::SECOND,
                })
                .collect();
            let found = store::requests_made_in(conn, &spans).await?;
            data.label_columns = vec!["Waiting for"];
            data.columns = vec![counted("requests waiting")];
            let waiting: Vec<i64> = (0..AGES.len())
                .map(|k| {
                    found
                        .iter()
                        .filter(|(at, s, _)| *at == k && *s == RequestState::Submitted)
                        .map(|(_, _, n)| n)
                        .sum()
                })
                .collect();
            data.rows = AGES
                .iter()
                .zip(&waiting)
                .map(|((name, _, _), n)| ReportRow {
                    labels: vec![(*name).to_owned()],
                    values: vec![count(*n)],
                })
                .collect();
            let total: i64 = waiting.iter().sum();
            data.axis = "requests";
            data.summary = if total == 0 {
                "No requests wait for a decision.".to_owned()
            } else {
                let parts: Vec<String> = AGES
                    .iter()
                    .zip(&waiting)
                    .map(|((name, _, _), n)| format!("{n} for {name}"))
                    .collect();
                format!(
                    "{} for a decision: {}.",
                    things(total, "request waits", "requests wait"),
                    listed(&parts)
                )
            };
        }
        Chart::UnopenedLinks => {
            let weeks = weeks(now);
            let spans: Vec<Span> = weeks.iter().map(|(_, s)| *s).collect();
            let found = store::unopened_links_in(conn, &spans, now).await?;
            data.label_columns = vec!["Week starting"];
            data.columns = vec![counted("links expired unopened")];
            data.rows = weeks
                .iter()
                .enumerate()
                .map(|(k, (monday, _))| ReportRow {
                    labels: vec![monday.to_string()],
                    values: vec![count(
                        found
                            .iter()
                            .filter(|(at, _)| *at == k)
                            .map(|(_, n)| n)
                            .sum(),
                    )],
                })
                .collect();
            let total: i64 = found.iter().map(|(_, n)| n).sum();
            data.axis = "links";
            data.summary = if total == 0 {
                format!("No delivery link expired unopened in the last {WEEKS} weeks.")
            } else {
                let most = peak(&data.rows, 0)
                    .map(|(r, v)| format!("; the most in the week beginning {}: {v:.0}", label(r)))
                    .unwrap_or_default();
                format!(
                    "{} without being opened in the last {WEEKS} weeks{most}.",
                    things(total, "delivery link expired", "delivery links expired"),
                )
            };
        }
        Chart::PurposesByMonth => {
            let months = months(now);
            let spans: Vec<Span> = months.iter().map(|(_, s)| *s).collect();
            let found = store::purposes_in(conn, &spans).await?;
            let states = RequestState::ALL;
            data.label_columns = vec!["Month", "Purpose"];
            data.columns = std::iter::once(counted("total"))
                .chain(states.iter().map(|s| counted(s.as_str())))
                .collect();
            // (month, purpose) → counts by state.
            let mut groups: Vec<((usize, String), Vec<i64>)> = Vec::new();
            let mut slots: HashMap<(usize, String), usize> = HashMap::new();
            for (k, purpose, state, n) in found {
                let key = (k, purpose);
                let slot = match slots.get(&key) {
                    Some(&i) => i,
                    None => {
                        slots.insert(key.clone(), groups.len());
                        groups.push((key, vec![0; states.len()]));
                        groups.len() - 1
                    }
                };
                if let (Some(i), Some((_, counts))) = (
                    states.iter().position(|s| *s == state),
                    groups.get_mut(slot),
                ) {
                    counts[i] += n;
                }
            }
            // Month by month; in a month, the most requested purpose first.
            groups.sort_by(|((ka, pa), ca), ((kb, pb), cb)| {
                ka.cmp(kb)
                    .then(cb.iter().sum::<i64>().cmp(&ca.iter().sum::<i64>()))
                    .then(pa.cmp(pb))
            });
            let total: i64 = groups.iter().flat_map(|(_, c)| c).sum();
            let mut purposes: Vec<&str> = groups.iter().map(|((_, p), _)| p.as_str()).collect();
            purposes.sort_unstable();
            purposes.dedup();
            let purposes = purposes.len() as i64;
            data.rows = groups
                .iter()
                .map(|((k, purpose), counts)| ReportRow {
                    labels: vec![
                        months.get(*k).map(|(m, _)| m.clone()).unwrap_or_default(),
                        purpose.clone(),
                    ],
                    values: std::iter::once(counts.iter().sum::<i64>())
                        .chain(counts.iter().copied())
                        .map(count)
                        .collect(),
                })
                .collect();
            let first = months.first().map(|(m, _)| m.as_str()).unwrap_or_default();
            let last = months.last().map(|(m, _)| m.as_str()).unwrap_or_default();
            data.axis = "requests";
            data.summary = if total == 0 {
                format!("No requests were made in the {MONTHS} months from {first} to {last}.")
            } else {
                format!(
                    "{} in the {MONTHS} months from {first} to {last}, with {}.",
                    things(total, "request was made", "requests were made"),
                    things(purposes, "purpose", "different purposes"),
                )
            };
        }
    }
    Ok(data)
}

impl App {
    fn require_reader(actor: &Actor) -> AppResult<()> {
        if actor.roles.can_audit() {
            Ok(())
        } else {
            Err(
                DomainError::Forbidden("only auditors and admins can read the reports".into())
                    .into(),
            )
        }
    }

    /// One report, as of now: auditors and admins.
    pub async fn report(&self, actor: &Actor, chart: Chart) -> AppResult<ReportData> {
        Self::require_reader(actor)?;
        let now = self.now();
        let mut cache = self.0.reports.charts.lock().await;
        self.cached_report(&mut cache, chart, now).await
    }

    /// Every report ([`Chart::ALL`]), all as of the same instant: auditors and admins.
    pub async fn reports(&self, actor: &Actor) -> AppResult<Vec<ReportData>> {
        Self::require_reader(actor)?;
        let now = self.now();
        let mut cache = self.0.reports.charts.lock().await;
        let mut all = Vec::with_capacity(Chart::ALL.len());
        for chart in Chart::ALL {
            all.push(self.cached_report(&mut cache, chart, now).await?);
        }
        Ok(all)
    }

    /// `chart` as last computed, if that was less than [`REPORT_FRESH`] ago (by the app's
    /// clock and by the real one); otherwise computed now and kept. The cache's lock is held
    /// meanwhile, so one computation serves everyone who asked at the same time.
    async fn cached_report(
        &self,
        cache: &mut HashMap<Chart, (std::time::Instant, ReportData)>,
        chart: Chart,
        now: OffsetDateTime,
    ) -> AppResult<ReportData> {
        if let Some((computed, data)) = cache.get(&chart)
            && computed.elapsed() < REPORT_FRESH
            && (now - data.as_of).abs() < REPORT_FRESH
        {
            return Ok(data.clone());
        }
        let mut conn = self.read().await?;
        let data = build(&mut conn, chart, now).await?;
        cache.insert(chart, (std::time::Instant::now(), data.clone()));
        Ok(data)
    }
}

/// How long a report is shown as computed: its numbers are at most this old (the page says when
/// they were read). Over a large history each takes tens to hundreds of milliseconds to count.
pub const REPORT_FRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// Reports read lately, by chart, with when they were computed.
#[derive(Default)]
pub(super) struct ReportCache {
    charts: tokio::sync::Mutex<HashMap<Chart, (std::time::Instant, ReportData)>>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn percentiles_interpolate_between_ranks() {
        assert_eq!(median_and_p90(&mut []), (None, None));
        assert_eq!(median_and_p90(&mut [4.0]), (Some(4.0), Some(4.0)));
        assert_eq!(median_and_p90(&mut [3.0, 1.0]), (Some(2.0), Some(2.8)));
        let mut ten: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let (m, p) = median_and_p90(&mut ten);
        assert_eq!(m, Some(5.5));
        assert!((p.unwrap() - 9.1).abs() < 1e-9);
    }

    #[test]
    fn windows_follow_the_calendar() {
        let now = datetime!(2026-03-04 10:00 UTC); // a Wednesday
        let w = weeks(now);
        assert_eq!(w.len() as i64, WEEKS);
        assert_eq!(w.last().unwrap().0, date!(2026 - 03 - 02));
        assert_eq!(w.first().unwrap().0, date!(2025 - 12 - 15));
        let m = months(now);
        assert_eq!(m.first().unwrap().0, "2025-04");
        assert_eq!(m.last().unwrap().0, "2026-03");
        assert_eq!(m.last().unwrap().1.to, datetime!(2026-04-01 0:00 UTC));
    }

    #[test]
    fn every_report_has_a_slug_of_its_own() {
        for c in Chart::ALL {
            assert_eq!(Chart::from_slug(c.slug()), Some(c));
        }
        assert_eq!(Chart::from_slug("nope"), None);
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let data = ReportData {
            chart: Chart::PurposesByMonth,
            label_columns: vec!["Month", "Purpose"],
            columns: vec![counted("total")],
            rows: vec![ReportRow {
                labels: vec!["2026-03".into(), "=cmd, \"x\"".into()],
                values: vec![Some(2.0)],
            }],
            summary: String::new(),
            axis: "requests",
            as_of: datetime!(2026-03-04 10:00 UTC),
        };
        assert_eq!(
            data.csv(),
            "Month,Purpose,total\r\n2026-03,\"'=cmd, \"\"x\"\"\",2\r\n"
        );
    }
}

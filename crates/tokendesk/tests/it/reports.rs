//! `/reports` over HTTP on every backend: a small known history made through the service's
//! own operations with the clock moved, then every report's table cells, its CSV file exactly,
//! its chart (well-formed SVG, named for assistive technology, no inline styles) and who may
//! see them. The reports are [`Chart::ALL`]: each must be on the page and have its files.

use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tokendesk::app::{Chart, Ctx, Drawing, RoleBook};
use tokendesk::config::AuthConfig;
use tokendesk::domain::RequestId;
use tokendesk::domain::request::RawNewRequest;
use tokendesk::web::WebOptions;

use crate::support::app::Api;
use crate::support::db::TestDb;
use crate::support::world::{World, login};

const SAM: &str = "sam.student";
const STELLA: &str = "stella.student";
const RITA: &str = "rita.researcher";
const ADMIN: &str = "ada.admin";
const AUDITOR: &str = "aude.auditor";
const APPROVER: &str = "andy.approver";
const HELPDESK: &str = "theo.teacher";

const GRADING: &str = "Grading scripts for my course sections";
const RESEARCH: &str = "Research data export, survey project";
/// A purpose a spreadsheet would run as a formula: the CSV defuses it.
const FORMULA: &str = "=SUM(A1) spreadsheet sync for my course";

/// When the reports are read: a Wednesday; its week began on Monday 2027-03-01.
const NOW: OffsetDateTime = datetime!(2027-03-03 12:00 UTC);

async fn service(db: TestDb) -> Api {
    let world = World::tweaked(db, |parts| {
        let set = |names: &[&str]| names.iter().map(|n| login(n)).collect();
        parts.roles = RoleBook {
            approvers: set(&[ADMIN, APPROVER]),
            helpdesk: set(&[HELPDESK]),
            auditors: set(&[AUDITOR]),
            admins: set(&[ADMIN]),
        };
        parts.policy.max_open_requests_per_person = 10;
    })
    .await;
    Api::on(world, AuthConfig::default(), WebOptions::default()).await
}

async fn submit(w: &World, who: &str, purpose: &str, expires_on: &str) -> RequestId {
    let raw = RawNewRequest {
        purpose: Some(purpose.into()),
        expires_on: Some(expires_on.into()),
        application: None,
    };
    w.app
        .submit(&w.actor(who), &raw, &Ctx::default())
        .await
        .unwrap()
        .id
}

async fn approve(w: &World, id: RequestId) {
    w.app
        .approve(&w.actor(ADMIN), id, None, &Ctx::default())
        .await
        .unwrap();
    tokendesk::jobs::drain(&w.app).await.unwrap();
}

/// The history the reports are checked against (times UTC):
///
/// | request | who    | purpose  | made             | then                                          |
/// |---------|--------|----------|------------------|-----------------------------------------------|
/// | r1      | stella | research | Mon 02-15 09:00  | approved 13:00 (4 h), link never opened: expired 02-22 13:00, token deleted 02-23 09:00 |
/// | r7      | rita   | grading  | Sat 02-20 10:00  | waiting (over 7 days)                         |
/// | r2      | sam    | grading  | Mon 02-22 09:00  | approved 11:00 (2 h), revealed, activated 02-23 11:00 (24 h); expires on 03-10 |
/// | r3      | rita   | grading  | Mon 02-22 10:00  | denied 14:00                                  |
/// | r4      | rita   | research | Wed 02-24 09:00  | cancelled 09:30                               |
/// | r5      | stella | grading  | Mon 03-01 08:00  | waiting (1 to 3 days)                         |
/// | r6      | sam    | formula  | Wed 03-03 11:00  | waiting (under 1 day)                         |
async fn history(w: &World) {
    let at = |t: OffsetDateTime| w.clock.set(t);
    at(datetime!(2027-02-15 09:00 UTC));
    let r1 = submit(w, STELLA, RESEARCH, "2027-04-30").await;
    at(datetime!(2027-02-15 13:00 UTC));
    approve(w, r1).await;
    at(datetime!(2027-02-20 10:00 UTC));
    submit(w, RITA, GRADING, "2027-04-30").await;
    at(datetime!(2027-02-22 09:00 UTC));
    let r2 = submit(w, SAM, GRADING, "2027-03-10").await;
    at(datetime!(2027-02-22 10:00 UTC));
    let r3 = submit(w, RITA, GRADING, "2027-04-30").await;
    at(datetime!(2027-02-22 11:00 UTC));
    approve(w, r2).await;
    w.reveal_value(SAM).await;
    at(datetime!(2027-02-22 14:00 UTC));
    w.app
        .deny(&w.actor(ADMIN), r3, Some("not for this"), &Ctx::default())
        .await
        .unwrap();
    at(datetime!(2027-02-23 09:00 UTC));
    let swept = tokendesk::jobs::sweep(&w.app).await.unwrap();
    assert_eq!(swept.envelopes_expired, 1, "{swept:?}");
    assert_eq!(swept.never_used, 1, "{swept:?}");
    at(datetime!(2027-02-23 11:00 UTC));
    let token = {
        let mut conn = w.db.store.pool().acquire().await.unwrap();
        tokendesk::store::token_for_request(&mut conn, r2)
            .await
            .unwrap()
            .unwrap()
    };
    w.activate_in_canvas(SAM, token.canvas_token_id).await;
    let check = w
        .app
        .check_activation(&w.actor(SAM), token.id)
        .await
        .unwrap();
    assert!(check.active, "{}", check.message);
    at(datetime!(2027-02-24 09:00 UTC));
    let r4 = submit(w, RITA, RESEARCH, "2027-04-30").await;
    at(datetime!(2027-02-24 09:30 UTC));
    w.app
        .cancel(&w.actor(RITA), r4, &Ctx::default())
        .await
        .unwrap();
    at(datetime!(2027-03-01 08:00 UTC));
    submit(w, STELLA, GRADING, "2027-04-30").await;
    at(datetime!(2027-03-03 11:00 UTC));
    submit(w, SAM, FORMULA, "2027-04-30").await;
    at(NOW);
}

/// The twelve Mondays of the weekly reports.
const WEEKS: [&str; 12] = [
    "2026-12-14",
    "2026-12-21",
    "2026-12-28",
    "2027-01-04",
    "2027-01-11",
    "2027-01-18",
    "2027-01-25",
    "2027-02-01",
    "2027-02-08",
    "2027-02-15",
    "2027-02-22",
    "2027-03-01",
];

/// Weekly CSV lines: the given ones, `zero` for every other week.
fn weekly(zero: &str, given: &[(&str, &str)]) -> String {
    WEEKS
        .iter()
        .map(|w| {
            let rest = given
                .iter()
                .find(|(week, _)| week == w)
                .map_or(zero, |(_, r)| *r);
            format!("{w},{rest}\r\n")
        })
        .collect()
}

/// Daily CSV lines from `first` for `days` days, each `value(day)`.
fn daily(first: time::Date, days: i64, value: impl Fn(&str) -> &'static str) -> String {
    (0..days)
        .map(|d| {
            let day = (first + Duration::days(d)).to_string();
            let v = value(&day);
            format!("{day},{v}\r\n")
        })
        .collect()
}

/// What each report's CSV file must say, exactly.
fn expected_csv(chart: Chart) -> String {
    match chart {
        Chart::RequestsPerWeek => format!(
            "Week starting,submitted,approved,issued,activated,expired,revoked,denied,cancelled,failed,total\r\n{}",
            weekly(
                "0,0,0,0,0,0,0,0,0,0",
                &[
                    ("2027-02-15", "1,0,0,0,1,0,0,0,0,2"),
                    ("2027-02-22", "0,0,0,1,0,0,1,1,0,3"),
                    ("2027-03-01", "2,0,0,0,0,0,0,0,0,2"),
                ],
            )
        ),
        Chart::LiveTokens => format!(
            "Day,live tokens\r\n{}",
            daily(time::macros::date!(2027 - 02 - 02), 30, |d| {
                match d {
                    d if d < "2027-02-15" => "0",
                    d if d < "2027-02-22" => "1",
                    "2027-02-22" => "2",
                    _ => "1",
                }
            })
        ),
        Chart::TimeToToken => format!(
            "Week starting,approved,median hours to approval,90th percentile hours to approval,\
             activated,median hours from approval to activation,\
             90th percentile hours from approval to activation\r\n{}",
            weekly(
                "0,,,0,,",
                &[
                    ("2027-02-15", "1,4.0,4.0,0,,"),
                    ("2027-02-22", "1,2.0,2.0,1,24.0,24.0"),
                ],
            )
        ),
        Chart::ExpiringSoon => format!(
            "Day,tokens expiring\r\n{}",
            daily(time::macros::date!(2027 - 03 - 03), 30, |d| {
                if d == "2027-03-10" { "1" } else { "0" }
            })
        ),
        Chart::WaitingByAge => "Waiting for,requests waiting\r\n\
             under 1 day,1\r\n1 to 3 days,1\r\n3 to 7 days,0\r\nover 7 days,1\r\n"
            .to_owned(),
        Chart::UnopenedLinks => format!(
            "Week starting,links expired unopened\r\n{}",
            weekly("0", &[("2027-02-22", "1")])
        ),
        Chart::PurposesByMonth => "Month,Purpose,total,submitted,approved,issued,activated,expired,revoked,denied,cancelled,failed\r\n\
             2027-02,Grading scripts for my course sections,3,1,0,0,1,0,0,1,0,0\r\n\
             2027-02,\"Research data export, survey project\",2,0,0,0,0,1,0,0,1,0\r\n\
             2027-03,'=SUM(A1) spreadsheet sync for my course,1,1,0,0,0,0,0,0,0,0\r\n\
             2027-03,Grading scripts for my course sections,1,1,0,0,0,0,0,0,0,0\r\n"
            .to_owned(),
    }
}

/// What each report's summary (its text alternative) must say.
fn expected_summary(chart: Chart) -> &'static str {
    match chart {
        Chart::RequestsPerWeek => {
            "7 requests were made in the 12 weeks from 2026-12-14 to 2027-03-03; by their state \
             now: 3 submitted, 1 activated, 1 expired, 1 denied and 1 cancelled. The busiest week \
             began 2027-02-22, with 3."
        }
        Chart::LiveTokens => {
            "1 token is live now; at the end of each of the last 30 days there were between 0 and 2."
        }
        Chart::TimeToToken => {
            "In the last 12 weeks 2 requests were approved a median of 3.0 hours after they were \
             made (90th percentile: 3.8 hours); 1 token was activated a median of 24.0 hours \
             after approval (90th percentile: 24.0 hours)."
        }
        Chart::ExpiringSoon => {
            "1 token expires in the next 30 days (2027-03-03 to 2027-04-01); the most on 2027-03-10: 1."
        }
        Chart::WaitingByAge => {
            "3 requests wait for a decision: 1 for under 1 day, 1 for 1 to 3 days, 0 for 3 to 7 \
             days and 1 for over 7 days."
        }
        Chart::UnopenedLinks => {
            "1 delivery link expired without being opened in the last 12 weeks; the most in the \
             week beginning 2027-02-22: 1."
        }
        Chart::PurposesByMonth => {
            "7 requests were made in the 12 months from 2026-04 to 2027-03, with 3 different purposes."
        }
    }
}

/// The part of the page between a report's section and the next.
fn section(page: &str, chart: Chart) -> &str {
    let start = page
        .find(&format!(
            "<section class=\"report\" id=\"{}\"",
            chart.slug()
        ))
        .unwrap_or_else(|| panic!("no section for {}", chart.slug()));
    let rest = &page[start..];
    let end = rest.find("</section>").unwrap();
    &rest[..end]
}

/// The table rows of a section: each row's cells as text.
fn table_rows(section: &str) -> Vec<Vec<String>> {
    let Some(start) = section.find("<tbody>") else {
        return Vec::new();
    };
    let body = &section[start..section.find("</tbody>").unwrap()];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            let mut cells = Vec::new();
            let mut rest = row;
            while let Some(open) = rest.find(['<']) {
                let tag = &rest[open..];
                if tag.starts_with("<td") || tag.starts_with("<th") {
                    let content = &tag[tag.find('>').unwrap() + 1..];
                    let close = content.find("</t").unwrap();
                    cells.push(unescape(&content[..close]));
                    rest = &content[close + 1..];
                } else {
                    rest = &tag[1..];
                }
            }
            cells
        })
        .collect()
}

fn unescape(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The CSV file's cells, by line (a simple reader: quoted cells may hold commas and quotes).
fn csv_rows(csv: &str) -> Vec<Vec<String>> {
    csv.split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut cells = Vec::new();
            let mut cell = String::new();
            let (mut quoted, mut chars) = (false, line.chars().peekable());
            while let Some(c) = chars.next() {
                match (c, quoted) {
                    ('"', true) if chars.peek() == Some(&'"') => {
                        cell.push('"');
                        chars.next();
                    }
                    ('"', _) => quoted = !quoted,
                    (',', false) => cells.push(std::mem::take(&mut cell)),
                    (c, _) => cell.push(c),
                }
            }
            cells.push(cell);
            cells
        })
        .collect()
}

/// Checks a chart's SVG: well-formed, `role="img"` with the report's title as its label, and
/// no inline style (the page's CSP allows none).
fn check_svg(svg: &str, chart: Chart) -> roxmltree::Document<'_> {
    let doc = roxmltree::Document::parse(svg)
        .unwrap_or_else(|e| panic!("{}: the SVG is not well-formed: {e}\n{svg}", chart.slug()));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    assert_eq!(root.attribute("role"), Some("img"));
    assert_eq!(root.attribute("aria-label"), Some(chart.title()));
    for node in doc.descendants().filter(|n| n.is_element()) {
        assert!(
            node.attribute("style").is_none() && node.tag_name().name() != "style",
            "{}: an inline style in the chart",
            chart.slug()
        );
        assert_ne!(node.tag_name().name(), "script");
    }
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    assert!(!texts.is_empty(), "{}: no labels", chart.slug());
    doc
}

fn texts_of<'a>(doc: &'a roxmltree::Document<'a>) -> Vec<&'a str> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect()
}

#[tokio::test]
async fn reports_show_the_history_as_charts_tables_and_csv() {
    for db in TestDb::all().await {
        let backend = db.store.backend().name();
        let api = service(db).await;
        history(&api.world).await;

        let page = api.get(AUDITOR, "/reports").await.expect(200);
        let html = page.text.as_str();
        assert!(
            html.contains(r#"<a href="/reports" aria-current="page">Reports</a>"#),
            "{backend}: the page is in the navigation"
        );
        assert!(html.contains("as of 2027-03-03 12:00 UTC"), "{backend}");
        for chart in Chart::ALL {
            let slug = chart.slug();
            let part = section(html, chart);
            assert!(part.contains(&format!(">{}</h2>", chart.title())), "{slug}");

            // The CSV file, exactly; and the page's table shows the same numbers.
            let csv = api
                .get(ADMIN, &format!("/reports/{slug}.csv"))
                .await
                .expect(200);
            assert_eq!(
                csv.header("content-type").as_deref(),
                Some("text/csv; charset=utf-8"),
                "{slug}"
            );
            assert_eq!(
                csv.header("content-disposition").unwrap(),
                format!("attachment; filename=\"{slug}.csv\"")
            );
            assert_eq!(csv.text, expected_csv(chart), "{backend}: {slug}.csv");
            let from_csv = csv_rows(&csv.text);
            let header: Vec<String> = from_csv[0].clone();
            let shown: Vec<Vec<String>> = from_csv[1..]
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|c| {
                            let c = c.strip_prefix('\'').unwrap_or(c);
                            if c.is_empty() {
                                "–".to_owned()
                            } else {
                                c.to_owned()
                            }
                        })
                        .collect()
                })
                .collect();
            assert_eq!(table_rows(part), shown, "{backend}: the table of {slug}");
            for h in &header {
                assert!(
                    part.contains(&format!("<th scope=\"col\">{h}</th>"))
                        || part.contains(&format!("<th scope=\"col\" class=\"num\">{h}</th>")),
                    "{slug}: {h}"
                );
            }
            assert!(
                part.contains(&format!("href=\"/reports/{slug}.csv\"")),
                "{slug}"
            );

            // The text alternative.
            let summary = expected_summary(chart);
            assert!(
                part.contains(&format!("id=\"{slug}-summary\">{summary}</")),
                "{backend}: the summary of {slug}: {part}"
            );

            // The chart: inline, named and described by the summary; and as a file of its own.
            if chart.drawing() == Drawing::TableOnly {
                assert!(!part.contains("<svg"), "{slug}");
                api.get(ADMIN, &format!("/reports/{slug}.svg"))
                    .await
                    .expect(404);
                continue;
            }
            let start = part.find("<svg").expect("an inline chart");
            let end = part.find("</svg>").unwrap() + "</svg>".len();
            let doc = check_svg(&part[start..end], chart);
            assert_eq!(
                doc.root_element().attribute("aria-describedby"),
                Some(format!("{slug}-summary").as_str())
            );
            let texts = texts_of(&doc);
            let file = api
                .get(AUDITOR, &format!("/reports/{slug}.svg"))
                .await
                .expect(200);
            assert_eq!(
                file.header("content-type").as_deref(),
                Some("image/svg+xml")
            );
            let alone = check_svg(&file.text, chart);
            let title = alone
                .descendants()
                .find(|n| n.has_tag_name("title"))
                .and_then(|n| n.text());
            assert_eq!(title, Some(chart.title()));
            let desc = alone
                .descendants()
                .find(|n| n.has_tag_name("desc"))
                .and_then(|n| n.text());
            assert_eq!(desc, Some(summary));
            match chart {
                Chart::RequestsPerWeek => {
                    // The legend names every state; the axis the weeks.
                    for state in tokendesk::domain::request::RequestState::ALL {
                        assert!(texts.contains(&state.as_str()), "legend: {state}");
                    }
                    assert!(texts.contains(&"02-22"), "{texts:?}");
                    assert!(texts.contains(&"requests"), "{texts:?}");
                    // One bar segment per non-zero cell: 2 + 3 + 1.
                    let bars = doc
                        .descendants()
                        .filter(|n| n.has_tag_name("rect"))
                        .filter(|n| n.attribute("fill") != Some("#FFFFFF"))
                        .count();
                    assert_eq!(bars, 9 + 6, "legend swatches and bars");
                }
                Chart::WaitingByAge => {
                    for age in ["under 1 day", "1 to 3 days", "3 to 7 days", "over 7 days"] {
                        assert!(texts.contains(&age), "{texts:?}");
                    }
                }
                Chart::TimeToToken => {
                    assert!(texts.contains(&"hours"), "{texts:?}");
                    assert!(
                        doc.descendants().any(|n| n.has_tag_name("polyline")),
                        "lines"
                    );
                }
                _ => {}
            }
        }

        // Who may read them: auditors and admins; others are refused, and the signed-out told
        // to sign in.
        for who in [ADMIN, AUDITOR] {
            api.get(who, "/reports").await.expect(200);
            api.get(who, "/reports/waiting-by-age.csv")
                .await
                .expect(200);
        }
        for who in [SAM, APPROVER, HELPDESK] {
            let r = api.get(who, "/reports").await.expect(403);
            assert!(r.text.contains("only auditors and admins"), "{}", r.text);
            api.get(who, "/reports/waiting-by-age.csv")
                .await
                .expect(403);
            api.get(who, "/reports/waiting-by-age.svg")
                .await
                .expect(403);
            let me = api.get(who, "/me").await.expect(200);
            assert!(!me.text.contains("href=\"/reports\""), "{who} sees no link");
        }
        api.get_anon("/reports").await.expect(401);
        api.get_anon("/reports/waiting-by-age.csv")
            .await
            .expect(401);
        for missing in [
            "nope.csv",
            "waiting-by-age",
            "waiting-by-age.png",
            "purposes-by-month.svg",
        ] {
            api.get(AUDITOR, &format!("/reports/{missing}"))
                .await
                .expect(404);
        }
    }
}

#[tokio::test]
async fn an_empty_service_reports_nothing_yet() {
    let api = service(TestDb::sqlite().await).await;
    api.world.clock.set(NOW);
    let page = api.get(ADMIN, "/reports").await.expect(200);
    assert!(
        page.text
            .contains("No requests were made in the 12 weeks from 2026-12-14 to 2027-03-03."),
        "{}",
        page.text
    );
    assert!(page.text.contains("No requests wait for a decision."));
    assert!(page.text.contains("No tokens expire in the next 30 days"));
    for chart in Chart::ALL {
        let csv = api
            .get(ADMIN, &format!("/reports/{}.csv", chart.slug()))
            .await
            .expect(200);
        let lines = csv.text.split("\r\n").filter(|l| !l.is_empty()).count();
        let rows = match chart {
            Chart::PurposesByMonth => 0,
            Chart::WaitingByAge => 4,
            Chart::LiveTokens | Chart::ExpiringSoon => 30,
            _ => 12,
        };
        assert_eq!(lines, 1 + rows, "{}", chart.slug());
        if chart.drawing() != Drawing::TableOnly {
            let part = section(&page.text, chart);
            let start = part.find("<svg").unwrap();
            let end = part.find("</svg>").unwrap() + "</svg>".len();
            check_svg(&part[start..end], chart);
        }
    }
}

/// A month with more purposes than the page shows: the page's table has that month's most
/// requested purposes and says how many more rows the CSV file holds (it has them all).
#[tokio::test]
async fn the_page_shows_each_months_top_purposes_and_the_csv_all() {
    let api = service(TestDb::sqlite().await).await;
    let w = &api.world;
    w.clock.set(NOW - Duration::days(1));
    let expires = (NOW + Duration::days(30)).date().to_string();
    let shown = tokendesk::web::pages::ROWS_PER_GROUP;
    let extra = 5;
    // The first purpose twice (the most requested: shown first), then one each.
    let purposes: Vec<String> = (0..shown + extra)
        .map(|n| format!("Course export scripts, section {n:02}"))
        .collect();
    for (n, purpose) in purposes.iter().enumerate() {
        let who = [SAM, STELLA, RITA][n % 3];
        let id = submit(w, who, purpose, &expires).await;
        w.app
            .cancel(&w.actor(who), id, &Ctx::default())
            .await
            .unwrap();
    }
    submit(w, SAM, &purposes[0], &expires).await;
    w.clock.set(NOW);
    let html = api.get(AUDITOR, "/reports").await.expect(200).text;
    let table = html
        .split("id=\"purposes-by-month\"")
        .nth(1)
        .expect("the purposes report");
    let listed = purposes
        .iter()
        .filter(|p| table.contains(p.as_str()))
        .count();
    assert_eq!(listed, shown, "{table}");
    assert!(
        table.contains(&format!("{extra} more rows are in")),
        "{table}"
    );
    let csv = api
        .get(ADMIN, "/reports/purposes-by-month.csv")
        .await
        .expect(200)
        .text;
    for p in &purposes {
        assert!(csv.contains(p.as_str()), "{p} missing from the CSV:\n{csv}");
    }
}

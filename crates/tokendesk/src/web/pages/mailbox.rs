//! `/mailbox`: the demo's inbox (mailbox transport only). Only the links tokendesk itself puts in
//! its emails become links (a delivery link, a request's page, the request form, `/me`, and
//! where to activate tokens in Canvas); links to this tokendesk become relative, so they work
//! whatever address it runs at. Any other address stays text: a purpose such as
//! `http://HOST//evil.example/` must not become a link that looks like ours and leads away.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::error::PageError;
use super::session::{Chrome, Viewer};
use super::view;
use crate::web::WebState;

/// The newest messages shown.
const MESSAGES_SHOWN: usize = 50;

/// A run of text or a link, within a line.
pub enum Piece {
    Text(String),
    Link { href: String, text: String },
}

pub struct Message {
    pub id: i64,
    pub to: String,
    pub subject: String,
    pub sent: String,
    pub lines: Vec<Vec<Piece>>,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/mailbox.html")]
pub struct MailboxPage {
    pub c: Chrome,
    pub messages: Vec<Message>,
    pub everyone: bool,
}

/// Whether `path` (after the public URL) is one of the pages tokendesk links to in emails.
fn own_link(path: &str) -> bool {
    let (path, fragment) = match path.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (path, None),
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let segments: Vec<&str> = path.split('/').collect();
    match (segments.as_slice(), fragment) {
        // The delivery link alone carries a fragment: its key.
        (["e", id], Some(key)) => token(id) && token(key),
        (["e", id], None) => token(id),
        (["requests", "new"] | ["me"], None) => true,
        (["requests", id], None) => !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        _ => false,
    }
}

/// Splits a line into text and links (`http://…`, `https://…` up to the next space). Only
/// tokendesk's own links (under `own_base`) and `canvas_settings` become links.
pub fn pieces(line: &str, own_base: &str, canvas_settings: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(start) = rest
        .find("http://")
        .into_iter()
        .chain(rest.find("https://"))
        .min()
    {
        let (before, from) = rest.split_at(start);
        let end = from.find(char::is_whitespace).unwrap_or(from.len());
        let url = from[..end].trim_end_matches(['.', ',', ')', ';']);
        if !before.is_empty() {
            push_text(&mut out, before);
        }
        let href = match url.strip_prefix(own_base) {
            Some(path) if own_link(path) => Some(format!("/{path}")),
            _ if url == canvas_settings => Some(url.to_owned()),
            _ => None,
        };
        match href {
            Some(href) => out.push(Piece::Link {
                href,
                text: url.to_owned(),
            }),
            None => push_text(&mut out, url),
        }
        rest = &from[url.len()..];
    }
    if !rest.is_empty() {
        push_text(&mut out, rest);
    }
    out
}

/// Adds text, joined to the text before it.
fn push_text(out: &mut Vec<Piece>, text: &str) {
    if let Some(Piece::Text(last)) = out.last_mut() {
        last.push_str(text);
    } else {
        out.push(Piece::Text(text.to_owned()));
    }
}

/// `GET /mailbox`.
pub async fn show(State(state): State<WebState>, viewer: Viewer) -> Result<Response, PageError> {
    let messages = state
        .app
        .mailbox(&viewer.actor, None, Some(MESSAGES_SHOWN as i64))
        .await
        .map_err(|e| viewer.fail(e))?;
    let base = state.app.public_url().to_string();
    let base = if base.ends_with('/') {
        base
    } else {
        format!("{base}/")
    };
    let settings = state.app.canvas_settings_url();
    let page = MailboxPage {
        c: viewer.chrome("Mailbox"),
        everyone: viewer.actor.roles.admin,
        messages: messages
            .into_iter()
            .take(MESSAGES_SHOWN)
            .map(|m| Message {
                id: m.id,
                to: m.to_login.unwrap_or(m.to),
                subject: m.subject,
                sent: view::when(m.sent_at),
                lines: m
                    .text
                    .lines()
                    .map(|l| pieces(l, &base, &settings))
                    .collect(),
            })
            .collect(),
    };
    Ok(viewer.page(StatusCode::OK, &page))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(line: &str) -> Vec<String> {
        pieces(
            line,
            "http://td.test/",
            "https://canvas.test/profile/settings",
        )
        .iter()
        .map(|p| match p {
            Piece::Text(t) => format!("T({t})"),
            Piece::Link { href, text } => format!("L({href}|{text})"),
        })
        .collect()
    }

    #[test]
    fn links_are_found_and_own_links_become_relative() {
        assert_eq!(
            shown("  open http://td.test/e/abc#KEY now, or https://canvas.test/profile/settings."),
            [
                "T(  open )",
                "L(/e/abc#KEY|http://td.test/e/abc#KEY)",
                "T( now, or )",
                "L(https://canvas.test/profile/settings|https://canvas.test/profile/settings)",
                "T(.)"
            ]
        );
        assert_eq!(
            shown("review http://td.test/requests/12 or http://td.test/requests/new"),
            [
                "T(review )",
                "L(/requests/12|http://td.test/requests/12)",
                "T( or )",
                "L(/requests/new|http://td.test/requests/new)",
            ]
        );
    }

    /// Only links tokendesk made: an address that looks like ours but leads elsewhere (a
    /// purpose written by a requester), or any other site, stays text.
    #[test]
    fn other_addresses_stay_text() {
        for line in [
            "purpose: http://td.test//evil.example/x",
            "see https://canvas.test/x",
            "http://td.test/audit",
            "http://td.test/e/abc/../../audit",
            "http://td.test/requests/12#frag",
            "https://evil.example/e/abc#KEY",
        ] {
            assert!(
                shown(line).iter().all(|p| p.starts_with("T(")),
                "{line}: {:?}",
                shown(line)
            );
        }
    }
}

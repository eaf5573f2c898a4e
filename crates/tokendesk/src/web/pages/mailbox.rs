//! `/mailbox`: the demo's inbox (mailbox transport only). Addresses in the text part become
//! links; links to this tokendesk become relative, so they work whatever address it runs at.

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

/// Splits a line into text and links (`http://…`, `https://…` up to the next space).
pub fn pieces(line: &str, own_base: &str) -> Vec<Piece> {
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
            out.push(Piece::Text(before.to_owned()));
        }
        let href = match url.strip_prefix(own_base) {
            Some(path) => format!("/{path}"),
            None => url.to_owned(),
        };
        out.push(Piece::Link {
            href,
            text: url.to_owned(),
        });
        rest = &from[url.len()..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_owned()));
    }
    out
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
                lines: m.text.lines().map(|l| pieces(l, &base)).collect(),
            })
            .collect(),
    };
    Ok(viewer.page(StatusCode::OK, &page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_found_and_own_links_become_relative() {
        let p = pieces(
            "  open http://td.test/e/abc#KEY now, or https://canvas.test/x.",
            "http://td.test/",
        );
        let shown: Vec<String> = p
            .iter()
            .map(|p| match p {
                Piece::Text(t) => format!("T({t})"),
                Piece::Link { href, text } => format!("L({href}|{text})"),
            })
            .collect();
        assert_eq!(
            shown,
            [
                "T(  open )",
                "L(/e/abc#KEY|http://td.test/e/abc#KEY)",
                "T( now, or )",
                "L(https://canvas.test/x|https://canvas.test/x)",
                "T(.)"
            ]
        );
    }
}

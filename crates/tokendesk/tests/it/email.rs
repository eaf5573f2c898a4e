//! Email end to end: every composed email goes through `SmtpSender` to a real SMTP server on
//! loopback, and we check what arrives (decoded MIME), plus how failures are classified.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use time::macros::{date, datetime};
use tokendesk::delivery::email::{
    ApprovalMail, DenialMail, EmailError, NewRequestMail, OutgoingEmail, RevocationMail,
    SmtpSender, SmtpSettings, compose,
};
use tokendesk::delivery::envelope::{self, EnvelopeId, EnvelopeKey};

use crate::support::smtp::{self, Behavior, Received, SmtpServer};

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "7~ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210zyxwvutsrq";

fn sender(server: &SmtpServer) -> SmtpSender {
    SmtpSender::new(&server.smtp_settings()).unwrap()
}

/// A sender that gives up on the server after `timeout`.
fn impatient_sender(server: &SmtpServer, timeout: Duration) -> SmtpSender {
    SmtpSender::new(&SmtpSettings {
        timeout,
        ..server.smtp_settings()
    })
    .unwrap()
}

fn simple(to: &str, subject: &str) -> OutgoingEmail {
    OutgoingEmail {
        to: to.to_owned(),
        to_name: None,
        subject: subject.to_owned(),
        text: "hello".to_owned(),
        html: "<p>hello</p>".to_owned(),
    }
}

/// Common checks: envelope, headers, a multipart/alternative with text then HTML.
fn assert_well_formed(got: &Received, to: &str, subject: &str) -> (String, String) {
    assert_eq!(got.from, "tokendesk@example.edu");
    assert_eq!(got.to, vec![to.to_owned()]);
    let from = got.header("From").unwrap();
    assert!(
        from.contains("tokendesk") && from.contains("<tokendesk@example.edu>"),
        "{from}"
    );
    assert!(got.header("To").unwrap().contains(to));
    assert_eq!(got.header("Subject").unwrap(), subject);
    assert!(got.header("Date").is_some());
    assert!(got.header("Message-ID").is_some());
    assert_eq!(got.header("MIME-Version").unwrap(), "1.0");
    assert!(
        got.header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative"),
        "{:?}",
        got.header("Content-Type")
    );
    let parts = got.parts();
    let types: Vec<&str> = parts.iter().map(|p| p.content_type.as_str()).collect();
    assert_eq!(types, ["text/plain", "text/html"]);
    (got.text_body().unwrap(), got.html_body().unwrap())
}

#[tokio::test]
async fn approval_email_delivers_a_link_that_opens_the_envelope() {
    let server = smtp::start().await;

    // Issue: seal the token, build the link, compose and send the email.
    let id = EnvelopeId::generate();
    let key = EnvelopeKey::generate();
    let sealed = envelope::seal(&id, &key, &SecretString::from(TOKEN.to_owned())).unwrap();
    let public = url::Url::parse("https://tokens.example.edu/desk/").unwrap();
    let link = envelope::delivery_link(&public, &id, &key);
    drop(key); // the server forgets the key once the email is handed over
    let mail = compose(&ApprovalMail {
        to: "jane.doe@example.edu",
        to_name: Some("Jane Doe"),
        request_id: 42,
        link: &link,
        link_expires_at: datetime!(2026-12-05 14:00 UTC),
        token_expires_on: date!(2027 - 03 - 27),
        canvas_settings_url: "https://canvas.example.edu/profile/settings",
        product_name: "Example University Canvas tokens",
    })
    .unwrap();
    sender(&server).send(&mail).await.unwrap();

    let got = server.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    let (text, html) = assert_well_formed(
        &got[0],
        "jane.doe@example.edu",
        "Your Canvas access token is ready (request #42)",
    );
    assert!(got[0].header("To").unwrap().contains("Jane Doe"));
    for body in [&text, &html] {
        assert!(
            body.contains(link.expose_secret()),
            "link missing from a part"
        );
        assert!(body.contains("2026-12-05 14:00 UTC"));
        assert!(body.contains("2027-03-27"));
        assert!(body.contains("Approved Integrations"));
        assert!(body.contains("like a password"));
    }
    // The token value never travels by email, in any encoding.
    assert!(!got[0].data_str().contains(TOKEN));
    assert!(!text.contains(TOKEN) && !html.contains(TOKEN));

    // The owner's browser: take the link from the email, the key from its fragment, and open.
    let received_link = got[0].find_link("/e/").unwrap();
    assert_eq!(received_link, link.expose_secret());
    let parsed = url::Url::parse(&received_link).unwrap();
    assert_eq!(parsed.path(), format!("/desk/e/{id}"));
    let key = EnvelopeKey::from_fragment(parsed.fragment().unwrap()).unwrap();
    let opened = envelope::open(&id, &key, &sealed).unwrap();
    assert_eq!(opened.expose_secret(), TOKEN);
}

#[tokio::test]
async fn denial_revocation_and_new_request_emails_arrive_intact() {
    let server = smtp::start().await;
    let sender = sender(&server);

    let denial = compose(&DenialMail {
        to: "al@example.edu",
        to_name: None,
        request_id: 7,
        reason: "Please use the LTI integration <instead> & ask us.",
        portal_url: Some("https://tokens.example.edu/requests/new"),
        product_name: "tokendesk",
    })
    .unwrap();
    let revocation = compose(&RevocationMail {
        to: "al@example.edu",
        to_name: Some("Al"),
        request_id: Some(9),
        token_hint: Some("7~Zy"),
        reason: "Security: found in a public repository.",
        portal_url: None,
        product_name: "tokendesk",
    })
    .unwrap();
    let new_request = compose(&NewRequestMail {
        to: "admin@example.edu",
        to_name: Some("Zoë Åström"),
        requester_name: "Jöns Ångström",
        requester_login: "jangstrom",
        request_id: 12,
        purpose: "Nightly grade export to the SIS — read-only.",
        expires_on: date!(2026 - 12 - 05),
        review_url: "https://tokens.example.edu/approvals/12",
        product_name: "tokendesk",
    })
    .unwrap();

    // One pooled sender, three messages in a row.
    for mail in [&denial, &revocation, &new_request] {
        sender.send(mail).await.unwrap();
    }
    let got = server.wait_for(3, WAIT).await;

    let (text, html) = assert_well_formed(
        &got[0],
        "al@example.edu",
        "Your Canvas access token request #7 was not approved",
    );
    assert!(text.contains("Please use the LTI integration <instead> & ask us."));
    assert!(html.contains("Please use the LTI integration &#60;instead&#62; &#38; ask us."));
    assert!(text.contains("https://tokens.example.edu/requests/new"));

    let (text, html) = assert_well_formed(
        &got[1],
        "al@example.edu",
        "Your Canvas access token has been revoked (request #9)",
    );
    for body in [&text, &html] {
        assert!(body.contains("request #9"));
        assert!(body.contains("7~Zy"));
        assert!(body.contains("found in a public repository"));
    }

    let (text, html) = assert_well_formed(
        &got[2],
        "admin@example.edu",
        "New Canvas access token request #12 from Jöns Ångström",
    );
    assert!(got[2].header("To").unwrap().contains("Zoë Åström"));
    for body in [&text, &html] {
        assert!(body.contains("Hello Zoë Åström,"));
        assert!(body.contains("Nightly grade export to the SIS — read-only."));
        assert!(body.contains("jangstrom"));
        assert!(body.contains("2026-12-05"));
        assert!(body.contains("https://tokens.example.edu/approvals/12"));
    }
}

#[tokio::test]
async fn long_lines_and_leading_dots_survive_transfer_encoding() {
    let server = smtp::start().await;
    let long = "x".repeat(300);
    let mail = OutgoingEmail {
        text: format!(".starts with a dot\n..two dots\n.\n{long}\nend"),
        html: format!("<p>{long}</p>\n.<p>dot</p>"),
        ..simple("dots@example.edu", "Dots")
    };
    sender(&server).send(&mail).await.unwrap();
    let got = server.wait_for(1, WAIT).await;
    assert_eq!(got[0].text_body().unwrap().trim_end(), mail.text);
    assert_eq!(got[0].html_body().unwrap().trim_end(), mail.html);
}

async fn send_expecting_error(server: &SmtpServer) -> EmailError {
    let err = sender(server)
        .send(&simple("x@example.edu", "Hi"))
        .await
        .unwrap_err();
    assert!(server.messages().is_empty());
    err
}

#[tokio::test]
async fn reply_451_is_transient() {
    for behavior in [Behavior::RejectRcpt(451), Behavior::RejectData(451)] {
        let server = smtp::start_with(behavior).await;
        let err = send_expecting_error(&server).await;
        assert!(err.is_transient(), "{behavior:?}: {err}");
        assert_eq!(err.smtp_code(), Some(451), "{behavior:?}");
        assert!(err.to_string().contains("451"), "{err}");
    }
}

#[tokio::test]
async fn reply_550_is_permanent() {
    for behavior in [Behavior::RejectRcpt(550), Behavior::RejectData(554)] {
        let server = smtp::start_with(behavior).await;
        let err = send_expecting_error(&server).await;
        assert!(!err.is_transient(), "{behavior:?}: {err}");
        assert!(
            matches!(err, EmailError::Permanent { .. }),
            "{behavior:?}: {err}"
        );
        assert!(err.smtp_code().is_some_and(|c| c >= 550), "{behavior:?}");
    }
}

#[tokio::test]
async fn error_text_never_contains_the_link_or_body() {
    let server = smtp::start_with(Behavior::RejectData(550)).await;
    let link = SecretString::from(
        "https://tokens.example.edu/e/AAECAwQFBgcICQoLDA0ODw#AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
            .to_owned(),
    );
    let mail = compose(&ApprovalMail {
        to: "jane@example.edu",
        to_name: None,
        request_id: 1,
        link: &link,
        link_expires_at: datetime!(2026-12-05 14:00 UTC),
        token_expires_on: date!(2027 - 03 - 27),
        canvas_settings_url: "https://canvas.example.edu/profile/settings",
        product_name: "tokendesk",
    })
    .unwrap();
    let err = sender(&server).send(&mail).await.unwrap_err();
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(
            !shown.contains("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"),
            "{shown}"
        );
        assert!(!shown.contains("Approved Integrations"), "{shown}");
    }
}

#[tokio::test]
async fn closed_port_is_transient() {
    let port = {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        listener.local_addr().unwrap().port()
    };
    let settings = SmtpSettings {
        host: "127.0.0.1".to_owned(),
        port,
        tls: tokendesk::delivery::email::SmtpTls::None,
        username: None,
        password: None,
        from: "tokendesk@example.edu".to_owned(),
        timeout: Duration::from_secs(5),
    };
    let sender = SmtpSender::new(&settings).unwrap();
    let err = sender
        .send(&simple("x@example.edu", "Hi"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.smtp_code(), None);
    assert!(sender.check_connection().await.unwrap_err().is_transient());
}

#[tokio::test]
async fn silent_server_times_out_as_transient() {
    let server = smtp::start_with(Behavior::NoGreeting).await;
    let sender = impatient_sender(&server, Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(WAIT, sender.send(&simple("x@example.edu", "Hi")))
        .await
        .expect("send must give up on its own")
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A send given up on at the timeout (the server took the message and never answered it)
/// leaves no half-used connection behind: the next send goes through at once, on a new
/// connection. (lettre put the abandoned one back in its pool, and the next send began on it:
/// its NOOP was read as part of the unfinished message, went unanswered, and that send timed
/// out too, a failed attempt the server never refused.)
#[tokio::test]
async fn a_send_that_timed_out_leaves_no_half_used_connection() {
    let server = smtp::start_with(Behavior::StallAfterData).await;
    let sender = impatient_sender(&server, Duration::from_millis(500));
    let err = sender
        .send(&simple("x@example.edu", "First"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    server.set_behavior(Behavior::Accept);
    // A clone shares the pool (the workers each hold one).
    sender
        .clone()
        .send(&simple("x@example.edu", "Second"))
        .await
        .expect("the next send begins on a connection of its own");
    let got = server.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("Subject").unwrap(), "Second");
    sender.check_connection().await.unwrap();
}

#[tokio::test]
async fn check_connection_succeeds_against_a_live_server() {
    let server = smtp::start().await;
    sender(&server).check_connection().await.unwrap();
}

#[tokio::test]
async fn bad_recipient_address_is_permanent_and_sends_nothing() {
    let server = smtp::start().await;
    let err = sender(&server)
        .send(&simple("not an address", "Hi"))
        .await
        .unwrap_err();
    assert!(matches!(err, EmailError::InvalidAddress { .. }), "{err}");
    assert!(!err.is_transient());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn test_server_speaks_smtp() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let server = smtp::start().await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    let mut expect = async |w: &mut tokio::net::tcp::OwnedWriteHalf, send: &str, code: &str| {
        if !send.is_empty() {
            w.write_all(send.as_bytes()).await.unwrap();
        }
        loop {
            line.clear();
            r.read_line(&mut line).await.unwrap();
            assert!(
                line.starts_with(code),
                "sent {send:?}, expected {code}, got {line:?}"
            );
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
    };
    expect(&mut w, "", "220").await;
    expect(&mut w, "MAIL FROM:<a@b.c>\r\n", "503").await;
    expect(&mut w, "HELO client\r\n", "250").await;
    expect(&mut w, "EHLO client\r\n", "250").await;
    expect(&mut w, "NOOP\r\n", "250").await;
    expect(&mut w, "RCPT TO:<x@y.z>\r\n", "503").await;
    expect(&mut w, "DATA\r\n", "503").await;
    expect(&mut w, "MAIL FROM:<a@b.c> BODY=8BITMIME\r\n", "250").await;
    expect(&mut w, "RSET\r\n", "250").await;
    expect(&mut w, "RCPT TO:<x@y.z>\r\n", "503").await;
    expect(&mut w, "mail from:<a@b.c>\r\n", "250").await;
    expect(&mut w, "RCPT TO:<x@y.z>\r\n", "250").await;
    expect(&mut w, "RCPT TO:<w@y.z>\r\n", "250").await;
    expect(&mut w, "DATA\r\n", "354").await;
    expect(&mut w, "Subject: s\r\n\r\n..hidden dot\r\n.\r\n", "250").await;
    expect(&mut w, "BOGUS\r\n", "502").await;
    expect(&mut w, "QUIT\r\n", "221").await;
    let got = server.wait_for(1, WAIT).await;
    assert_eq!(got[0].from, "a@b.c");
    assert_eq!(got[0].to, ["x@y.z", "w@y.z"]);
    assert_eq!(got[0].data_str(), "Subject: s\r\n\r\n.hidden dot\r\n");
}

//! The JSON API over real HTTP: every endpoint's happy path, every error status, sign-in (trusted
//! header and the demo cookie), the headers every answer carries, and the OpenAPI document.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokendesk::config::{AuthConfig, AuthMode};
use tokendesk::delivery::envelope::Sealed;
use tokendesk::domain::Login;
use tokendesk::web::WebOptions;

use crate::support::app::{Api, Resp, client, serve};
use crate::support::db::TestDb;
use crate::support::world::{self, World};

const SAM: &str = "sam.student";
const STELLA: &str = "stella.student";
const ADA: &str = "ada.admin";
const THEO: &str = "theo.teacher";

fn action_names(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

/// Every endpoint's happy path, in the order of the process.
async fn story_over_http(db: TestDb) {
    let api = Api::start(db).await;
    let checked_before = api.checked.load(std::sync::atomic::Ordering::Relaxed);

    // Who am I.
    let me = api.get(SAM, "/api/v1/me").await.expect(200).json();
    assert_eq!(me, json!({"login": SAM, "roles": ["requester"]}));
    let me = api.get("Ada.Admin", "/api/v1/me").await.expect(200).json();
    assert_eq!(me["login"], ADA);
    assert_eq!(
        me["roles"],
        json!(["requester", "approver", "auditor", "admin"])
    );

    // Ask.
    let expires_on = api.world.today_plus(30);
    let r = api
        .post(
            SAM,
            "/api/v1/requests",
            json!({"purpose": "grading scripts for my course sections", "expires_on": expires_on, "application": "grader.py"}),
        )
        .await
        .expect(201);
    let created = r.json();
    let id = created["id"].as_i64().unwrap();
    assert_eq!(
        r.header("location").unwrap(),
        format!("/api/v1/requests/{id}")
    );
    assert_eq!(created["state"], "submitted");
    assert_eq!(created["requester"], SAM);
    assert_eq!(created["purpose"], "grading scripts for my course sections");
    assert_eq!(created["application"], "grader.py");
    assert_eq!(created["expires_on"], expires_on.as_str());
    assert_eq!(created["requested_expires_on"], expires_on.as_str());
    assert_eq!(created["decided_by"], Value::Null);
    assert_eq!(created["reason"], Value::Null);
    let created_at = created["created_at"].as_str().unwrap();
    assert!(created_at.ends_with('Z'), "{created_at}");
    time::OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339)
        .unwrap();
    assert!(created.get("token_id").is_none());

    // Read it and list it.
    let got = api
        .get(SAM, &format!("/api/v1/requests/{id}"))
        .await
        .expect(200)
        .json();
    assert_eq!(got["id"], id);
    let mine = api.get(SAM, "/api/v1/requests").await.expect(200).json();
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let stella_id = api.submit(STELLA).await;
    let queue = api
        .get(ADA, "/api/v1/requests?queue=true&state=submitted")
        .await
        .expect(200)
        .json();
    let ids: Vec<i64> = queue
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![id, stella_id], "the queue is oldest first");
    let by_sam = api
        .get(ADA, "/api/v1/requests?requester=sam.student")
        .await
        .expect(200)
        .json();
    assert_eq!(by_sam.as_array().unwrap().len(), 1);
    let newest = api
        .get(ADA, "/api/v1/requests?state=submitted")
        .await
        .expect(200)
        .json();
    assert_eq!(newest[0]["id"], stella_id, "otherwise newest first");

    // Approve with an earlier expiry; the token is issued in the background.
    let shorter = api.world.today_plus(20);
    let approved = api
        .post(
            ADA,
            &format!("/api/v1/requests/{id}/approve"),
            json!({"expires_on": shorter}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(approved["state"], "approved");
    assert_eq!(approved["decided_by"], ADA);
    assert_eq!(approved["expires_on"], shorter.as_str());
    assert_eq!(approved["requested_expires_on"], expires_on.as_str());
    tokendesk::jobs::drain(&api.world.app).await.unwrap();
    let issued = api
        .get(SAM, &format!("/api/v1/requests/{id}"))
        .await
        .expect(200)
        .json();
    assert_eq!(issued["state"], "issued", "{issued}");
    let token_id = issued["token_id"].as_i64().unwrap();
    let envelope_id = issued["envelope_id"].as_str().unwrap().to_owned();
    assert!(
        issued["envelope_expires_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    // Tokens.
    let tokens = api.get(SAM, "/api/v1/tokens").await.expect(200).json();
    assert_eq!(tokens.as_array().unwrap().len(), 1);
    let token = api
        .get(SAM, &format!("/api/v1/tokens/{token_id}"))
        .await
        .expect(200)
        .json();
    assert_eq!(token["id"], token_id);
    assert_eq!(token["request_id"], id);
    assert_eq!(token["owner"], SAM);
    assert_eq!(token["state"], "pending");
    assert!(token["canvas_token_id"].as_i64().unwrap() > 0);
    assert!(token["canvas_user_id"].as_i64().unwrap() > 0);
    assert!(!token["hint"].as_str().unwrap().is_empty());
    assert!(token["expires_at"].as_str().unwrap().ends_with('Z'));
    let by_desk = api
        .get(THEO, "/api/v1/tokens?owner=sam.student")
        .await
        .expect(200)
        .json();
    assert_eq!(by_desk[0]["id"], token_id);

    // The envelope: look, reveal, decrypt with the key from the emailed link.
    let envelope = api
        .get(SAM, &format!("/api/v1/envelopes/{envelope_id}"))
        .await
        .expect(200)
        .json();
    assert_eq!(envelope["id"], envelope_id.as_str());
    assert_eq!(envelope["owner"], SAM);
    assert_eq!(envelope["state"], "sealed");
    assert_eq!(envelope["reveals_left"], 3);
    let revealed = api
        .post(
            SAM,
            &format!("/api/v1/envelopes/{envelope_id}/reveal"),
            json!({}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(revealed["reveals_left"], 2);
    assert_eq!(revealed["state"], "revealed");
    let nonce: [u8; 12] = URL_SAFE_NO_PAD
        .decode(revealed["nonce"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let ciphertext = URL_SAFE_NO_PAD
        .decode(revealed["ciphertext"].as_str().unwrap())
        .unwrap();
    let (link_id, key) = api.world.link_for(SAM).await;
    assert_eq!(link_id, envelope_id);
    let value = world::open(&envelope_id, &key, &Sealed { nonce, ciphertext });
    assert!(value.len() > 20);

    // The mailbox: admins read anyone's, people their own.
    let mail = api
        .get(ADA, "/api/v1/mailbox?to=sam.student")
        .await
        .expect(200)
        .json();
    let first = &mail.as_array().unwrap()[0];
    for field in ["to", "subject", "text", "html", "sent_at"] {
        assert!(first[field].is_string(), "{field} in {first}");
    }
    let own = api.get(SAM, "/api/v1/mailbox").await.expect(200).json();
    assert!(!own.as_array().unwrap().is_empty());
    let all = api.get(ADA, "/api/v1/mailbox").await.expect(200).json();
    let all = all.as_array().unwrap();
    assert!(all.len() >= 2, "{all:?}");
    let newest = api
        .get(ADA, "/api/v1/mailbox?limit=1")
        .await
        .expect(200)
        .json();
    assert_eq!(newest.as_array().unwrap().as_slice(), &all[..1]);
    api.get(SAM, "/api/v1/mailbox?limit=some")
        .await
        .expect_error(422, "invalid");

    // Burn, then the help desk revokes with a reason (deleted in Canvas).
    let burned = api
        .post(
            SAM,
            &format!("/api/v1/envelopes/{envelope_id}/burn"),
            json!({}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(burned["state"], "burned");
    assert_eq!(burned["reveals_left"], 0);
    let revoked = api
        .post(
            THEO,
            &format!("/api/v1/tokens/{token_id}/revoke"),
            json!({"reason": "leaked in a public repository"}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(revoked["state"], "deleted");
    let after = api
        .get(SAM, &format!("/api/v1/requests/{id}"))
        .await
        .expect(200)
        .json();
    assert_eq!(after["state"], "revoked");
    assert_eq!(after["reason"], "leaked in a public repository");

    // The audit trail, with filters; client addresses come from the connection.
    let events = api.get(ADA, "/api/v1/audit").await.expect(200).json();
    let actions = action_names(&events);
    for action in [
        "request.submit",
        "request.approve",
        "envelope.reveal",
        "token.revoke",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    let approvals = api
        .get(ADA, "/api/v1/audit?action=request.approve")
        .await
        .expect(200)
        .json();
    assert_eq!(action_names(&approvals), vec!["request.approve"]);
    assert_eq!(approvals[0]["actor"], ADA);
    assert_eq!(approvals[0]["client_addr"], "127.0.0.1");
    let seq = approvals[0]["seq"].as_i64().unwrap();
    let later = api
        .get(ADA, &format!("/api/v1/audit?after_seq={seq}&limit=2"))
        .await
        .expect(200)
        .json();
    assert!(later.as_array().unwrap().len() <= 2);
    assert!(
        later
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["seq"].as_i64().unwrap() > seq)
    );
    let by_theo = api
        .get(
            ADA,
            &format!(
                "/api/v1/audit?actor=theo.teacher&since={}&until=2999-01-01",
                api.world.today_plus(-1)
            ),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(action_names(&by_theo), vec!["token.revoke"]);
    assert!(api.world.app.verify_audit().await.unwrap().is_ok());

    // No answer ever held the token value; the key appeared only in the mailbox (the demo inbox).
    for (label, body) in api.seen.lock().unwrap().iter() {
        assert!(
            !body.contains(&value),
            "the token value in the answer to {label}"
        );
        if !label.contains("/mailbox") {
            assert!(
                !body.contains(&key),
                "the envelope key in the answer to {label}"
            );
        }
    }
    let checked = api.checked.load(std::sync::atomic::Ordering::Relaxed) - checked_before;
    assert!(
        checked >= 25,
        "only {checked} answers were checked against the document"
    );
}

#[tokio::test]
async fn every_endpoint_on_every_backend() {
    for db in TestDb::all().await {
        story_over_http(db).await;
    }
}

#[tokio::test]
async fn deny_cancel_and_retry() {
    let api = Api::start(TestDb::sqlite().await).await;
    let id = api.submit(SAM).await;
    let denied = api
        .post(
            ADA,
            &format!("/api/v1/requests/{id}/deny"),
            json!({"reason": "use the shared course token"}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(denied["state"], "denied");
    assert_eq!(denied["reason"], "use the shared course token");

    let id = api.submit(STELLA).await;
    let cancelled = api
        .post(STELLA, &format!("/api/v1/requests/{id}/cancel"), json!({}))
        .await
        .expect(200)
        .json();
    assert_eq!(cancelled["state"], "cancelled");
    // An empty body counts as `{}` (with the JSON content type).
    let id = api.submit(STELLA).await;
    api.post_raw(
        STELLA,
        &format!("/api/v1/requests/{id}/cancel"),
        Some("application/json; charset=utf-8"),
        "",
    )
    .await
    .expect(200);

    // Someone Canvas does not know is told so when they submit.
    let r = api
        .post(
            "nobody.known",
            "/api/v1/requests",
            json!({"purpose": "grading scripts for my course sections", "expires_on": api.world.today_plus(30)}),
        )
        .await
        .expect_error(422, "not_in_canvas");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Canvas has no user")
    );
    // Submitted while Canvas could not tell: issuance fails for good, then an approver may retry.
    api.world.sim.set_fail_rate(1.0);
    let id = api.submit("nobody.known").await;
    api.world.sim.set_fail_rate(0.0);
    api.post(ADA, &format!("/api/v1/requests/{id}/approve"), json!({}))
        .await
        .expect(200);
    tokendesk::jobs::drain(&api.world.app).await.unwrap();
    let failed = api
        .get("nobody.known", &format!("/api/v1/requests/{id}"))
        .await
        .expect(200)
        .json();
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(failed["reason"].is_string());
    let retried = api
        .post(ADA, &format!("/api/v1/requests/{id}/retry"), json!({}))
        .await
        .expect(200)
        .json();
    assert_eq!(retried["state"], "approved");
}

#[tokio::test]
async fn wrong_state_is_409() {
    let api = Api::start(TestDb::sqlite().await).await;
    let denied = api.submit(SAM).await;
    api.post(
        ADA,
        &format!("/api/v1/requests/{denied}/deny"),
        json!({"reason": "not now"}),
    )
    .await
    .expect(200);
    let r = api
        .post(
            ADA,
            &format!("/api/v1/requests/{denied}/approve"),
            json!({}),
        )
        .await
        .expect_error(409, "wrong_state");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("denied"),
        "{}",
        r.text
    );

    let id = api.submit(STELLA).await;
    api.post(ADA, &format!("/api/v1/requests/{id}/approve"), json!({}))
        .await
        .expect(200);
    api.post(ADA, &format!("/api/v1/requests/{id}/approve"), json!({}))
        .await
        .expect_error(409, "wrong_state");
    api.post(STELLA, &format!("/api/v1/requests/{id}/cancel"), json!({}))
        .await
        .expect_error(409, "wrong_state");
    api.post(ADA, &format!("/api/v1/requests/{id}/retry"), json!({}))
        .await
        .expect_error(409, "wrong_state");

    // A per-person limit is a 409 with its own code.
    api.submit(THEO).await;
    let r = api
        .post(THEO, "/api/v1/requests", json!({"purpose": "a second request for another course", "expires_on": api.world.today_plus(10)}))
        .await;
    r.expect_error(409, "too_many_open_requests");
}

#[tokio::test]
async fn signed_out_and_untrusted_peers_get_401() {
    let api = Api::start(TestDb::sqlite().await).await;
    for path in [
        "/api/v1/me",
        "/api/v1/requests",
        "/api/v1/tokens",
        "/api/v1/audit",
        "/api/v1/mailbox",
    ] {
        api.get_anon(path)
            .await
            .expect_error(401, "unauthenticated");
    }
    let r = api
        .send(
            None,
            api.client
                .post(api.url("/api/v1/requests"))
                .json(&json!({})),
        )
        .await;
    r.expect_error(401, "unauthenticated");
    // A header that is not a login.
    api.get("", "/api/v1/me")
        .await
        .expect_error(401, "unauthenticated");
    api.get("two words", "/api/v1/me")
        .await
        .expect_error(401, "unauthenticated");
    // A login that is not a plain identifier is refused, saying why.
    for (login, why) in [
        ("../audit", "`/`"),
        ("..", "only dots"),
        ("eve\u{202E}nimda", "reorder or hide"),
    ] {
        let r = api
            .send(
                None,
                api.client
                    .get(api.url("/api/v1/me"))
                    .header("X-Remote-User", login),
            )
            .await
            .expect_error(401, "unauthenticated");
        assert_eq!(r.field(), "login");
        assert!(
            r.code() == "unauthenticated" && r.text.contains(why),
            "{}",
            r.text
        );
    }

    // When loopback is not a trusted proxy, the header from it is ignored.
    let auth = AuthConfig {
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..AuthConfig::default()
    };
    let api = Api::with(TestDb::sqlite().await, auth, WebOptions::default()).await;
    api.get(ADA, "/api/v1/me")
        .await
        .expect_error(401, "unauthenticated");
    api.post(ADA, "/api/v1/requests", json!({}))
        .await
        .expect_error(401, "unauthenticated");
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_proxy_is_the_client_address() {
    // Two proxies: the one on loopback, and 10.1.2.3 before it.
    let mut auth = AuthConfig::default();
    auth.trusted_proxies.push("10.0.0.0/8".parse().unwrap());
    let api = Api::with(TestDb::sqlite().await, auth, WebOptions::default()).await;
    // The address the audit trail records for a submission sent with `forwarded_for`.
    let recorded = async |who: &str, forwarded_for: &str| {
        let body = json!({"purpose": "grading scripts for my course sections", "expires_on": api.world.today_plus(30)});
        let builder = api
            .client
            .post(api.url("/api/v1/requests"))
            .header("x-forwarded-for", forwarded_for)
            .json(&body);
        let id = api.send(Some(who), builder).await.expect(201).json()["id"]
            .as_i64()
            .unwrap();
        let events = api
            .get(ADA, &format!("/api/v1/audit?target=request:{id}"))
            .await
            .expect(200)
            .json();
        events[0]["client_addr"].as_str().unwrap().to_owned()
    };
    assert_eq!(recorded(SAM, "203.0.113.9, 10.1.2.3").await, "203.0.113.9");
    // A client that writes its own X-Forwarded-For cannot choose the recorded address: the
    // proxies append what they saw, so the right-most hop no trusted proxy vouches for is it.
    assert_eq!(
        recorded(STELLA, "6.6.6.6, 198.51.100.4, 10.1.2.3").await,
        "198.51.100.4"
    );
}

#[tokio::test]
async fn not_allowed_is_403() {
    let api = Api::start(TestDb::sqlite().await).await;
    let id = api.submit(SAM).await;
    api.post(SAM, &format!("/api/v1/requests/{id}/approve"), json!({}))
        .await
        .expect_error(403, "forbidden");
    api.post(
        SAM,
        &format!("/api/v1/requests/{id}/deny"),
        json!({"reason": "changed my mind"}),
    )
    .await
    .expect_error(403, "forbidden");
    api.post(ADA, &format!("/api/v1/requests/{id}/cancel"), json!({}))
        .await
        .expect_error(403, "forbidden");
    api.get(SAM, "/api/v1/audit")
        .await
        .expect_error(403, "forbidden");
    api.get(THEO, "/api/v1/audit")
        .await
        .expect_error(403, "forbidden");
    api.get(SAM, "/api/v1/requests?requester=stella.student")
        .await
        .expect_error(403, "forbidden");
    api.get(SAM, "/api/v1/tokens?owner=stella.student")
        .await
        .expect_error(403, "forbidden");
    api.get(SAM, "/api/v1/mailbox?to=stella.student")
        .await
        .expect_error(403, "forbidden");
}

#[tokio::test]
async fn unknown_and_other_peoples_things_are_404() {
    let api = Api::start(TestDb::sqlite().await).await;
    let issued = api.issued(SAM).await;
    let (id, token_id, envelope_id) = (
        issued["id"].as_i64().unwrap(),
        issued["token_id"].as_i64().unwrap(),
        issued["envelope_id"].as_str().unwrap().to_owned(),
    );
    // Someone else's request, token and envelope do not exist for stella.
    api.get(STELLA, &format!("/api/v1/requests/{id}"))
        .await
        .expect_error(404, "not_found");
    api.post(STELLA, &format!("/api/v1/requests/{id}/cancel"), json!({}))
        .await
        .expect_error(404, "not_found");
    api.get(STELLA, &format!("/api/v1/tokens/{token_id}"))
        .await
        .expect_error(404, "not_found");
    api.post(
        STELLA,
        &format!("/api/v1/tokens/{token_id}/revoke"),
        json!({"reason": "not mine anyway"}),
    )
    .await
    .expect_error(404, "not_found");
    api.get(STELLA, &format!("/api/v1/envelopes/{envelope_id}"))
        .await
        .expect_error(404, "not_found");
    api.post(
        STELLA,
        &format!("/api/v1/envelopes/{envelope_id}/reveal"),
        json!({}),
    )
    .await
    .expect_error(404, "not_found");
    api.post(
        STELLA,
        &format!("/api/v1/envelopes/{envelope_id}/burn"),
        json!({}),
    )
    .await
    .expect_error(404, "not_found");
    // Not even an admin opens someone's envelope.
    api.get(ADA, &format!("/api/v1/envelopes/{envelope_id}"))
        .await
        .expect_error(404, "not_found");
    // Unknown ids, malformed ids, unknown routes.
    api.get(SAM, "/api/v1/requests/999999")
        .await
        .expect_error(404, "not_found");
    api.get(SAM, "/api/v1/requests/abc")
        .await
        .expect_error(404, "not_found");
    api.get(SAM, "/api/v1/tokens/999999")
        .await
        .expect_error(404, "not_found");
    api.get(SAM, "/api/v1/envelopes/AAAAAAAAAAAAAAAAAAAAAA")
        .await
        .expect_error(404, "not_found");
    api.get(SAM, "/api/v1/nothing-here")
        .await
        .expect_error(404, "not_found");
    api.get_anon("/nothing-here")
        .await
        .expect_error(404, "not_found");
    // A known route with the wrong method: JSON too.
    let r = api
        .send(Some(SAM), api.client.delete(api.url("/api/v1/requests")))
        .await;
    r.expect_error(405, "method_not_allowed");
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_field() {
    let api = Api::start(TestDb::sqlite().await).await;
    let id = api.submit(SAM).await;
    let json_ct = Some("application/json");
    api.post_raw(STELLA, "/api/v1/requests", json_ct, "{\"purpose\": ")
        .await
        .expect_error(400, "malformed_json");
    api.post_raw(STELLA, "/api/v1/requests", json_ct, "{} trailing")
        .await
        .expect_error(400, "malformed_json");
    api.post_raw(STELLA, "/api/v1/requests", json_ct, "[]")
        .await
        .expect_error(400, "invalid_json");
    // An operation without fields takes `{}` (or nothing), not any JSON at all.
    for body in ["[]", "\"x\"", "7", "null"] {
        api.post_raw(SAM, &format!("/api/v1/requests/{id}/cancel"), json_ct, body)
            .await
            .expect_error(400, "invalid_json");
    }
    let r = api
        .post(
            STELLA,
            "/api/v1/requests",
            json!({"purpose": 5, "expires_on": "2030-01-01"}),
        )
        .await
        .expect_error(400, "invalid_json");
    assert_eq!(r.field(), "purpose");
    let r = api
        .post(
            STELLA,
            "/api/v1/requests",
            json!({"purpose": "x", "colour": "blue"}),
        )
        .await
        .expect_error(400, "unknown_field");
    assert_eq!(r.field(), "colour");
    let r = api
        .post(
            ADA,
            &format!("/api/v1/requests/{id}/approve"),
            json!({"expires": "2030-01-01"}),
        )
        .await
        .expect_error(400, "unknown_field");
    assert_eq!(r.field(), "expires");
    let r = api
        .post(
            ADA,
            &format!("/api/v1/requests/{id}/deny"),
            json!({"reason": ["a"]}),
        )
        .await
        .expect_error(400, "invalid_json");
    assert_eq!(r.field(), "reason");
    let r = api
        .post(
            SAM,
            &format!("/api/v1/requests/{id}/cancel"),
            json!({"now": true}),
        )
        .await
        .expect_error(400, "unknown_field");
    assert_eq!(r.field(), "now");
    // Nothing happened.
    let still = api
        .get(SAM, &format!("/api/v1/requests/{id}"))
        .await
        .expect(200)
        .json();
    assert_eq!(still["state"], "submitted");
}

#[tokio::test]
async fn state_changes_need_the_json_content_type_415() {
    let api = Api::start(TestDb::sqlite().await).await;
    let id = api.submit(SAM).await;
    let path = format!("/api/v1/requests/{id}/cancel");
    api.post_raw(SAM, &path, None, "{}")
        .await
        .expect_error(415, "unsupported_media_type");
    api.post_raw(SAM, &path, Some("text/plain"), "{}")
        .await
        .expect_error(415, "unsupported_media_type");
    api.post_raw(SAM, &path, Some("application/x-www-form-urlencoded"), "a=b")
        .await
        .expect_error(415, "unsupported_media_type");
    api.post_raw(SAM, &path, Some("multipart/form-data; boundary=x"), "--x--")
        .await
        .expect_error(415, "unsupported_media_type");
    api.post_raw(SAM, "/api/v1/requests", Some("text/plain"), "{}")
        .await
        .expect_error(415, "unsupported_media_type");
    let still = api
        .get(SAM, &format!("/api/v1/requests/{id}"))
        .await
        .expect(200)
        .json();
    assert_eq!(still["state"], "submitted");
    api.post_raw(SAM, &path, Some("Application/JSON; charset=utf-8"), "{}")
        .await
        .expect(200);
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let api = Api::with(
        TestDb::sqlite().await,
        AuthConfig::default(),
        WebOptions {
            max_body_bytes: 1024,
            ..WebOptions::default()
        },
    )
    .await;
    let big = json!({"purpose": "x".repeat(2000), "expires_on": api.world.today_plus(30)});
    let r = api
        .post(SAM, "/api/v1/requests", big)
        .await
        .expect_error(413, "payload_too_large");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1024")
    );
    // Under the limit it works.
    api.submit(SAM).await;
}

#[tokio::test]
async fn invalid_fields_are_422_naming_them() {
    let api = Api::start(TestDb::sqlite().await).await;
    let post = |body: Value| {
        let api = &api;
        async move { api.post(SAM, "/api/v1/requests", body).await.expect(422) }
    };
    let r = post(json!({})).await;
    assert_eq!(r.field(), "purpose");
    let fields: Vec<String> = r.json()["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, vec!["purpose", "expires_on"]);
    assert_eq!(r.code(), "required");
    let ok_date = api.world.today_plus(30);
    let r = post(json!({"purpose": "too short", "expires_on": ok_date})).await;
    assert_eq!(r.field(), "purpose");
    let r = post(
        json!({"purpose": "grading scripts for my course sections", "expires_on": "next tuesday"}),
    )
    .await;
    assert_eq!(r.field(), "expires_on");
    let r = post(json!({"purpose": "grading scripts for my course sections", "expires_on": api.world.today_plus(121)})).await;
    assert_eq!(r.field(), "expires_on");
    let r = post(json!({"purpose": "grading scripts for my course sections", "expires_on": api.world.today_plus(0)})).await;
    assert_eq!(r.field(), "expires_on");
    let r = post(json!({"purpose": "grading scripts for my course sections", "expires_on": ok_date, "application": "a".repeat(1000)})).await;
    assert_eq!(r.field(), "application");
    let r = post(json!({"purpose": "p".repeat(5000), "expires_on": ok_date})).await;
    assert_eq!(r.field(), "purpose");
    assert!(
        api.get(SAM, "/api/v1/requests")
            .await
            .expect(200)
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Decisions.
    let id = api.submit(SAM).await;
    let r = api
        .post(
            ADA,
            &format!("/api/v1/requests/{id}/approve"),
            json!({"expires_on": "31/12/2030"}),
        )
        .await
        .expect(422);
    assert_eq!(r.field(), "expires_on");
    let r = api
        .post(
            ADA,
            &format!("/api/v1/requests/{id}/approve"),
            json!({"expires_on": api.world.today_plus(31)}),
        )
        .await
        .expect(422);
    assert_eq!(r.field(), "expires_on");
    assert_eq!(r.code(), "later_than_requested");
    let r = api
        .post(ADA, &format!("/api/v1/requests/{id}/deny"), json!({}))
        .await
        .expect(422);
    assert_eq!(r.field(), "reason");
    let r = api
        .post(
            ADA,
            &format!("/api/v1/requests/{id}/deny"),
            json!({"reason": "   "}),
        )
        .await
        .expect(422);
    assert_eq!(r.field(), "reason");
    let issued = api.issued(STELLA).await;
    let token_id = issued["token_id"].as_i64().unwrap();
    let r = api
        .post(
            THEO,
            &format!("/api/v1/tokens/{token_id}/revoke"),
            json!({}),
        )
        .await
        .expect(422);
    assert_eq!(r.field(), "reason");
    let r = api
        .post(
            STELLA,
            &format!("/api/v1/tokens/{token_id}/revoke"),
            json!({"reason": ""}),
        )
        .await
        .expect(422);
    assert_eq!(r.field(), "reason");

    // Query parameters.
    assert_eq!(
        api.get(ADA, "/api/v1/requests?state=bogus")
            .await
            .expect(422)
            .field(),
        "state"
    );
    assert_eq!(
        api.get(ADA, "/api/v1/requests?queue=maybe")
            .await
            .expect(422)
            .field(),
        "queue"
    );
    assert_eq!(
        api.get(ADA, "/api/v1/requests?requester=a%20b")
            .await
            .expect(422)
            .field(),
        "requester"
    );
    assert_eq!(
        api.get(ADA, "/api/v1/audit?since=yesterday")
            .await
            .expect(422)
            .field(),
        "since"
    );
    assert_eq!(
        api.get(ADA, "/api/v1/audit?limit=ten")
            .await
            .expect(422)
            .field(),
        "limit"
    );
    assert_eq!(
        api.get(ADA, "/api/v1/audit?after_seq=x")
            .await
            .expect(422)
            .field(),
        "after_seq"
    );
}

#[tokio::test]
async fn canvas_down_during_revoke_is_503_and_changes_nothing() {
    let api = Api::start(TestDb::sqlite().await).await;
    let issued = api.issued(SAM).await;
    let token_id = issued["token_id"].as_i64().unwrap();
    let Api { world, server, .. } = api;
    drop(server);
    let World { sim, db, app, .. } = world;
    sim.shutdown().await;
    let server = serve(
        app.clone(),
        AuthConfig::default(),
        vec![],
        None,
        WebOptions::default(),
    )
    .await;
    let r = client()
        .post(format!("{}/api/v1/tokens/{token_id}/revoke", server.base))
        .header("X-Remote-User", THEO)
        .json(&json!({"reason": "leaked in a public repository"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "canvas_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was changed")
    );
    let r = client()
        .get(format!("{}/api/v1/tokens/{token_id}", server.base))
        .header("X-Remote-User", SAM)
        .send()
        .await
        .unwrap();
    let token: Value = r.json().await.unwrap();
    assert_eq!(token["state"], "pending");
    drop(db);
}

#[tokio::test]
async fn a_closed_database_is_503_with_retry_after_and_a_request_id() {
    let api = Api::start(TestDb::sqlite().await).await;
    let r = api.get_anon("/healthz").await.expect(200);
    assert_eq!(r.json(), json!({"status": "ok"}));
    let r = api.get_anon("/readyz").await.expect(200);
    assert_eq!(r.json()["status"], "ok");

    api.world.app.close().await;
    let r = api
        .get(SAM, "/api/v1/requests")
        .await
        .expect_error(503, "unavailable");
    let id = r.header("x-request-id").unwrap();
    assert_eq!(r.json()["error"]["request_id"], id.as_str());
    assert_eq!(r.header("retry-after").as_deref(), Some("5"));
    assert!(
        !r.text.to_lowercase().contains("pool"),
        "no internals leak: {}",
        r.text
    );
    api.get_anon("/readyz").await.expect(503);
    api.get_anon("/healthz").await.expect(200);
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let api = Api::start(TestDb::sqlite().await).await;
    let answers: Vec<Resp> = vec![
        api.get_anon("/healthz").await,
        api.get_anon("/api/openapi.json").await,
        api.get(SAM, "/api/v1/me").await,
        api.get_anon("/api/v1/me").await,
        api.get(SAM, "/api/v1/nowhere").await,
        api.post_raw(SAM, "/api/v1/requests", Some("text/plain"), "x")
            .await,
    ];
    let mut ids = std::collections::HashSet::new();
    for r in answers {
        assert_eq!(
            r.header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{r:?}"
        );
        assert_eq!(r.header("referrer-policy").as_deref(), Some("no-referrer"));
        assert_eq!(
            r.header("content-security-policy").as_deref(),
            Some("default-src 'none'; frame-ancestors 'none'")
        );
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
        let id = r.header("x-request-id").unwrap();
        assert!(id.len() >= 16, "{id}");
        assert!(ids.insert(id), "request ids differ");
    }
}

#[tokio::test]
async fn the_openapi_document_covers_every_api_route() {
    let api = Api::start(TestDb::sqlite().await).await;
    let r = api.get_anon("/api/openapi.json").await.expect(200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["info"]["description"]
            .as_str()
            .unwrap()
            .contains("Content-Type: application/json"),
        "CSRF rule documented"
    );
    let routes = tokendesk::web::api_routes();
    assert!(routes.len() >= 16);
    for (method, path) in &routes {
        let key = path.strip_prefix("/api/v1").unwrap();
        let operation = &doc["paths"][key][method.as_str().to_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            ["200", "201", "202"]
                .iter()
                .any(|s| operation["responses"][*s].is_object()),
            "{method} {path} documents its success"
        );
        if method.as_str() == "POST" {
            assert!(
                operation["requestBody"].is_object(),
                "{method} {path} documents its body"
            );
            for status in ["400", "401", "413", "415"] {
                assert!(
                    operation["responses"][status].is_object(),
                    "{method} {path} documents {status}"
                );
            }
        }
        // The listed route really is served (signed out: 401, not 404).
        let url = api.url(&path.replace("{id}", "1"));
        let builder = if method.as_str() == "POST" {
            api.client.post(url).json(&json!({}))
        } else {
            api.client.get(url)
        };
        api.send(None, builder)
            .await
            .expect_error(401, "unauthenticated");
    }
    for path in ["/healthz", "/readyz", "/api/openapi.json"] {
        assert!(doc["paths"][path]["get"].is_object(), "{path}");
    }
    // The checker every API test goes through does refuse an answer outside the document.
    let contract = &api.contract;
    assert!(
        contract
            .check(
                "GET",
                "/api/v1/me",
                200,
                &json!({"login": "sam", "roles": ["requester"]})
            )
            .unwrap()
    );
    assert!(
        contract
            .check("GET", "/api/v1/me", 200, &json!({"login": 7}))
            .is_err()
    );
    assert!(
        contract
            .check("GET", "/api/v1/me", 418, &json!({"error": {}}))
            .is_err(),
        "an undocumented status"
    );
    assert!(
        contract
            .check(
                "GET",
                "/api/v1/requests/12",
                404,
                &json!({"error": {"code": "not_found"}})
            )
            .is_err(),
        "the error shape needs a message"
    );
    // The sign-in scheme names the configured header.
    assert_eq!(
        doc["components"]["securitySchemes"]["trustedHeader"]["name"],
        "X-Remote-User"
    );
    let renamed = AuthConfig {
        header: "X-Shib-Eppn".into(),
        ..AuthConfig::default()
    };
    let other = Api::with(TestDb::sqlite().await, renamed, WebOptions::default()).await;
    let doc2 = other.get_anon("/api/openapi.json").await.expect(200).json();
    assert_eq!(
        doc2["components"]["securitySchemes"]["trustedHeader"]["name"],
        "X-Shib-Eppn"
    );
    // The policy's limits are in the request body's schema.
    let purpose = &doc["components"]["schemas"]["NewRequestBody"]["properties"]["purpose"];
    assert_eq!(purpose["minLength"], 20, "{purpose}");
    assert_eq!(purpose["maxLength"], 200, "{purpose}");
    // Every reference resolves.
    let text = r.text;
    for piece in text.split("\"$ref\": \"#/").skip(1) {
        let pointer = piece.split('"').next().unwrap();
        assert!(
            doc.pointer(&format!("/{pointer}")).is_some(),
            "dangling $ref {pointer}"
        );
    }
}

async fn demo_server(listen: Option<std::net::SocketAddr>) -> (World, crate::support::app::Server) {
    let world = World::new(TestDb::sqlite().await).await;
    let auth = AuthConfig {
        mode: AuthMode::Demo,
        ..AuthConfig::default()
    };
    let people = vec![
        (Login::parse(SAM).unwrap(), "Sam Student".to_owned()),
        (Login::parse(ADA).unwrap(), "Ada <Admin>".to_owned()),
    ];
    let server = serve(
        world.app.clone(),
        auth,
        people,
        listen,
        WebOptions::default(),
    )
    .await;
    (world, server)
}

#[tokio::test]
async fn demo_sign_in_starts_a_session() {
    let (_world, server) = demo_server(None).await;
    let c = client();
    let page = c
        .get(format!("{}/demo/login", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("form-action 'self'")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("sam.student") && html.contains("Sam Student"));
    assert!(
        html.contains("Ada &#60;Admin&#62;") || html.contains("Ada &lt;Admin&gt;"),
        "escaped: {html}"
    );

    // The sign-in header means nothing in demo mode.
    let r = c
        .get(format!("{}/api/v1/me", server.base))
        .header("X-Remote-User", ADA)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let r = c
        .post(format!("{}/demo/login", server.base))
        .form(&[("login", SAM)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/");
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let me: Value = c
        .get(format!("{}/api/v1/me", server.base))
        .header("cookie", &cookie)
        .header("X-Remote-User", ADA)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["login"], SAM);

    // A tampered cookie is nobody.
    let (name, value) = cookie.split_once('=').unwrap();
    let mut bytes = value.as_bytes().to_vec();
    bytes[0] = if bytes[0] == b'A' { b'B' } else { b'A' };
    let forged = format!("{name}={}", String::from_utf8(bytes).unwrap());
    let r = c
        .get(format!("{}/api/v1/me", server.base))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Only the demo's people.
    let r = c
        .post(format!("{}/demo/login", server.base))
        .form(&[("login", "theo.teacher")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);

    let r = c
        .post(format!("{}/demo/logout", server.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // Signing out ends the session itself: the old cookie, sent again, is nobody.
    let r = c
        .get(format!("{}/api/v1/me", server.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn demo_sign_in_is_refused_unless_listening_on_loopback() {
    let (_world, server) = demo_server(Some("0.0.0.0:8080".parse().unwrap())).await;
    let c = client();
    let r = c
        .get(format!("{}/demo/login", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    let r = c
        .post(format!("{}/demo/login", server.base))
        .form(&[("login", SAM)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(!tokendesk::web::demo_allowed_on(
        "0.0.0.0:8080".parse().unwrap()
    ));
    assert!(tokendesk::web::demo_allowed_on(
        "127.0.0.1:8080".parse().unwrap()
    ));
}

#[tokio::test]
async fn trusted_header_mode_has_no_demo_pages() {
    let api = Api::start(TestDb::sqlite().await).await;
    api.get_anon("/demo/login")
        .await
        .expect_error(404, "not_found");
}

/// The help desk sends a new delivery link while the token is pending and its link was never
/// opened (or has expired): a new value, a new envelope, the old one closed, all audited.
#[tokio::test]
async fn the_help_desk_sends_a_new_link() {
    let api = Api::start(TestDb::sqlite().await).await;
    let issued = api.issued(SAM).await;
    let id = issued["id"].as_i64().unwrap();
    let old_envelope = issued["envelope_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/requests/{id}/resend-link");
    // Only the help desk.
    api.post(SAM, &path, json!({}))
        .await
        .expect_error(403, "forbidden");
    let (_, old_key) = api.world.link_for(SAM).await;
    let sent = api.post(THEO, &path, json!({})).await.expect(200).json();
    let new_envelope = sent["envelope_id"].as_str().unwrap().to_owned();
    assert_ne!(new_envelope, old_envelope);
    // The old link is closed; the new one opens and holds a working (pending) token.
    let old = api
        .get(SAM, &format!("/api/v1/envelopes/{old_envelope}"))
        .await
        .expect(200)
        .json();
    assert_eq!(old["state"], "burned");
    let (link_id, key) = api.world.link_for(SAM).await;
    assert_eq!(link_id, new_envelope);
    assert_ne!(key, old_key);
    let value = api.world.reveal_value(SAM).await;
    let token = api
        .get(SAM, &format!("/api/v1/tokens/{}", sent["token_id"]))
        .await
        .expect(200)
        .json();
    assert_eq!(
        &value[..5],
        token["hint"].as_str().unwrap(),
        "the hint follows the new value"
    );
    // Audited, by the help desk.
    let events = api
        .get(
            ADA,
            &format!("/api/v1/audit?target=request:{id}&action=request.resend_link"),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(events[0]["actor"], THEO, "{events}");
    // Now opened and not expired: the owner can still use it, so no new link.
    api.post(THEO, &path, json!({}))
        .await
        .expect_error(409, "link_opened");
    // Once it has expired, it may be sent again.
    api.world.clock.advance(time::Duration::days(8));
    api.post(THEO, &path, json!({})).await.expect(200);
    // Activated: the owner has the token; nothing more to send.
    api.world
        .activate_in_canvas(SAM, token["canvas_token_id"].as_i64().unwrap())
        .await;
    api.world.clock.advance(time::Duration::minutes(10));
    tokendesk::jobs::sweep(&api.world.app).await.unwrap();
    api.post(THEO, &path, json!({}))
        .await
        .expect_error(409, "wrong_state");
}

/// Over a `[limits]` limit the answer is 429 with `Retry-After` and nothing is stored; other
/// people are not held back; probing envelope ids soon stops, and refusals stop filling the trail.
#[tokio::test]
async fn over_a_limit_is_429_with_retry_after_and_nothing_is_stored() {
    let limits = tokendesk::config::LimitsConfig {
        submissions_per_hour: 2,
        envelope_lookups_per_minute: 14,
        ..Default::default()
    };
    let options = WebOptions {
        limits,
        ..WebOptions::default()
    };
    let api = Api::with(TestDb::sqlite().await, AuthConfig::default(), options).await;
    let issued = api.issued(SAM).await;
    api.submit(SAM).await;
    let refused = api
        .post(
            SAM,
            "/api/v1/requests",
            json!({"purpose": "grading scripts for my course sections",
                   "expires_on": api.world.today_plus(30)}),
        )
        .await
        .expect_error(429, "too_many_requests");
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    // Two an hour: the next one is allowed half an hour after the first.
    assert!((1..=1800).contains(&wait), "Retry-After: {wait}");
    assert!(refused.text.contains("try again in"), "{}", refused.text);
    let mine = api.get(SAM, "/api/v1/requests").await.expect(200).json();
    assert_eq!(mine.as_array().unwrap().len(), 2, "{mine}");
    api.submit(STELLA).await;

    // Stella tries Sam's envelope: not found, and recorded, ten times an hour at most.
    let envelope = issued["envelope_id"].as_str().unwrap();
    for _ in 0..12 {
        api.post(
            STELLA,
            &format!("/api/v1/envelopes/{envelope}/reveal"),
            json!({}),
        )
        .await
        .expect_error(404, "not_found");
    }
    // Two more look-ups this minute, then 429.
    for guess in ["AAAAAAAAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBBBBBBBB"] {
        api.get(STELLA, &format!("/api/v1/envelopes/{guess}"))
            .await
            .expect(404);
    }
    let probing = api
        .get(STELLA, "/api/v1/envelopes/CCCCCCCCCCCCCCCCCCCCCC")
        .await
        .expect_error(429, "too_many_requests");
    assert!(probing.header("retry-after").is_some());
    // Sam, from the same address, is held back too: look-ups are counted per address as well.
    api.get(SAM, &format!("/api/v1/envelopes/{envelope}"))
        .await
        .expect_error(429, "too_many_requests");
    let trail = api
        .get(
            ADA,
            "/api/v1/audit?action=envelope.reveal&actor=stella.student",
        )
        .await
        .expect(200)
        .json();
    assert_eq!(
        trail.as_array().unwrap().len(),
        tokendesk::app::REFUSAL_RECORDS.count as usize,
        "{trail}"
    );
}

/// List sizes and paging are checked, not quietly clamped; a parameter given empty is refused.
#[tokio::test]
async fn list_parameters_out_of_range_are_refused() {
    let api = Api::start(TestDb::sqlite().await).await;
    for (path, field) in [
        ("/api/v1/requests?limit=0", "limit"),
        ("/api/v1/requests?limit=1001", "limit"),
        ("/api/v1/mailbox?limit=201", "limit"),
        ("/api/v1/audit?limit=5001", "limit"),
        ("/api/v1/audit?after_seq=-1", "after_seq"),
    ] {
        let r = api.get(ADA, path).await.expect_error(422, "out_of_range");
        assert_eq!(r.field(), field, "{path}");
        assert!(r.text.contains("must be"), "{}", r.text);
    }
    api.get(ADA, "/api/v1/requests?limit=1000")
        .await
        .expect(200);
    api.get(ADA, "/api/v1/audit?limit=5000&after_seq=0")
        .await
        .expect(200);
    for path in [
        "/api/v1/requests?state=",
        "/api/v1/tokens?owner=",
        "/api/v1/audit?actor=%20",
    ] {
        let r = api.get(ADA, path).await.expect_error(400, "bad_query");
        assert!(r.text.contains("is empty"), "{}", r.text);
    }
}

/// The `Link: <…>; rel="next"` address of an answer, if it has one.
fn next_link(r: &Resp) -> Option<String> {
    let link = r.header("link")?;
    let (address, rel) = link.split_once(';')?;
    assert_eq!(rel.trim(), "rel=\"next\"", "{link}");
    Some(
        address
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_owned(),
    )
}

/// Follows `first` and its next links as `who`: every page's items.
async fn walk(api: &Api, who: &str, first: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut address = Some(first.to_owned());
    while let Some(a) = address {
        let r = api.get(who, &a).await.expect(200);
        address = next_link(&r);
        pages.push(r.json().as_array().unwrap().clone());
        assert!(pages.len() < 50, "the links go round in circles");
    }
    pages
}

/// Lists come a page at a time, continued by the `Link` header (keyset paging), each item once
/// and in order; a list without a requester is everyone's only for those who may see it, and
/// nobody's own lists (the API's, `/me`) show anyone else's requests.
#[tokio::test]
async fn lists_page_by_keyset_and_own_lists_stay_own() {
    for db in TestDb::all().await {
        let api = Api::start(db).await;
        // One open request at a time each (the default policy): cancel to ask again.
        let mut sams = Vec::new();
        for n in 0..3 {
            let id = api.submit(SAM).await;
            sams.push(id);
            if n < 2 {
                api.post(SAM, &format!("/api/v1/requests/{id}/cancel"), json!({}))
                    .await
                    .expect(200);
            }
        }
        let stella = api.submit(STELLA).await;
        let ada = api.submit(ADA).await;
        let mut everyone = sams.clone();
        everyone.extend([stella, ada]);

        // Everyone's, newest first, two at a time: three pages, each request once.
        let pages = walk(&api, ADA, "/api/v1/requests?limit=2").await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        let seen: Vec<i64> = pages
            .iter()
            .flatten()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        let mut newest_first = everyone.clone();
        newest_first.reverse();
        assert_eq!(seen, newest_first);
        // The queue's order, oldest first, with a filter kept across pages.
        let pages = walk(
            &api,
            ADA,
            "/api/v1/requests?queue=true&state=cancelled&limit=1",
        )
        .await;
        let seen: Vec<i64> = pages
            .iter()
            .flatten()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        assert_eq!(seen, sams[..2]);

        // One's own, whatever one's role: the approver's list of her own holds only hers.
        let own = api
            .get(ADA, "/api/v1/requests?requester=ada.admin")
            .await
            .expect(200);
        let own: Vec<i64> = own
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        assert_eq!(own, [ada]);
        let sam_list = api.get(SAM, "/api/v1/requests").await.expect(200);
        assert_eq!(sam_list.json().as_array().unwrap().len(), 3);
        let me = api.get(ADA, "/me").await.expect(200);
        let html = me.text.clone();
        assert!(
            html.contains(&format!("href=\"/requests/{ada}\"")),
            "{html}"
        );
        for other in sams.iter().chain([&stella]) {
            assert!(
                !html.contains(&format!("href=\"/requests/{other}\"")),
                "/me of an approver lists request {other} of someone else"
            );
        }

        // A page after a request the caller cannot see, or that does not exist, is refused by name.
        api.get(SAM, &format!("/api/v1/requests?after={stella}"))
            .await
            .expect_error(422, "unknown");
        let r = api
            .get(ADA, "/api/v1/requests?after=999999")
            .await
            .expect(422);
        assert_eq!(r.field(), "after");
        api.get(SAM, "/api/v1/tokens?after=0").await.expect(422);
        // An approval's expiry is a date or left out: an empty one is no date.
        let r = api
            .post(
                ADA,
                &format!("/api/v1/requests/{stella}/approve"),
                json!({"expires_on": ""}),
            )
            .await
            .expect(422);
        assert_eq!(r.field(), "expires_on");
        // (An empty query parameter is already a 400 naming it.)
        let r = api
            .get(
                ADA,
                "/api/v1/revocations/preview?owner=sam.student&issued_before=",
            )
            .await
            .expect(400);
        assert_eq!(r.field(), "issued_before");
        let r = api
            .post(
                ADA,
                "/api/v1/revocations",
                json!({"owner": "sam.student", "issued_before": "", "reason": "offboarding"}),
            )
            .await
            .expect(422);
        assert_eq!(r.field(), "issued_before");

        // The audit trail, three events at a time, continued by sequence number.
        let pages = walk(&api, ADA, "/api/v1/audit?limit=3").await;
        let seqs: Vec<i64> = pages
            .iter()
            .flatten()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        let all = api.get(ADA, "/api/v1/audit").await.expect(200);
        let all: Vec<i64> = all
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        assert!(all.len() > 3, "{all:?}");
        assert_eq!(seqs, all);
    }
}

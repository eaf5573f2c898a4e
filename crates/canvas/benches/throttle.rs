//! Token look-ups against the Canvas simulator with Canvas's default leaky bucket and 50 ms
//! latency: strictly sequential, naive unbounded concurrency, and the client's governed bulk
//! helper. Each mode uses its own admin token, so its own bucket.
//!
//! `cargo bench -p tokendesk-canvas --bench throttle [-- COUNT]` (or `TOKENDESK_BENCH_N=COUNT`);
//! default 1000 look-ups. Exits non-zero if the governed mode saw throttling or errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokendesk_canvas::{CanvasClient, CanvasUserId, SecretString, TokenRef, UserRef};
use tokendesk_canvas_sim::{
    DEFAULT_ADMIN_TOKEN, RunningSim, Seed, SeedToken, SeedUser, SimConfig, generate_token_value,
};

const TARGET_USER: u64 = 77;
const TARGET_TOKENS: usize = 100;
const LATENCY: Duration = Duration::from_millis(50);

struct Row {
    mode: &'static str,
    wall: Duration,
    requests: u64,
    throttled: u64,
    errors: usize,
}

fn count() -> usize {
    let from_arg = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok());
    let from_env = std::env::var("TOKENDESK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok());
    from_arg.or(from_env).unwrap_or(1000).max(1)
}

fn client(sim: &RunningSim, token: &str) -> CanvasClient {
    CanvasClient::builder(sim.base_url(), SecretString::from(token))
        .max_retries(10)
        .build()
        .unwrap()
}

#[tokio::main]
async fn main() -> ExitCode {
    let n = count();
    let mode_tokens: Vec<String> = (0..3).map(|_| generate_token_value()).collect();
    let mut seed = Seed::default();
    if let Some(admin) = seed.users.iter_mut().find(|u| u.id == 1) {
        admin
            .tokens
            .extend(mode_tokens.iter().map(|t| SeedToken::active(t.clone())));
    }
    seed.users.push(SeedUser {
        id: TARGET_USER,
        name: "Tess Target".into(),
        login_id: "tess.target".into(),
        email: "tess@example.edu".into(),
        sis_user_id: None,
        admin: false,
        roles: vec!["teacher".into()],
        tokens: (0..TARGET_TOKENS)
            .map(|_| SeedToken::active(generate_token_value()))
            .collect(),
    });
    let sim = tokendesk_canvas_sim::start(
        SimConfig {
            seed,
            latency: LATENCY,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("simulator starts");
    let user = UserRef::Id(CanvasUserId(TARGET_USER));
    let ids: Vec<TokenRef> = client(&sim, DEFAULT_ADMIN_TOKEN)
        .list_user_tokens(&user)
        .await
        .expect("list the target's tokens")
        .iter()
        .map(|t| TokenRef::Id(t.id))
        .collect();
    assert_eq!(ids.len(), TARGET_TOKENS);
    let lookups: Vec<TokenRef> = ids.iter().cycle().take(n).cloned().collect();
    println!(
        "{n} token look-ups, simulator latency {} ms, default bucket (hwm 600, up-front 50, outflow 10/s)\n",
        LATENCY.as_millis()
    );

    let mut rows = Vec::new();

    // (1) Strictly sequential.
    let seq_client = client(&sim, &mode_tokens[0]);
    let before = sim.stats();
    let start = Instant::now();
    let mut errors = 0;
    for id in &lookups {
        if seq_client.show_token(&user, id).await.is_err() {
            errors += 1;
        }
    }
    rows.push(Row {
        mode: "sequential",
        wall: start.elapsed(),
        requests: sim.stats().api_requests - before.api_requests,
        throttled: sim.stats().throttled - before.throttled,
        errors,
    });

    // (2) Naive: everything at once; a throttled request is retried after ~100 ms.
    let http = reqwest::Client::new();
    let before = sim.stats();
    let start = Instant::now();
    let tasks = lookups.iter().map(|id| {
        let http = http.clone();
        let url = format!(
            "{}/api/v1/users/{TARGET_USER}/tokens/{}",
            sim.base_url(),
            id.path_segment()
        );
        let token = mode_tokens[1].clone();
        async move {
            loop {
                let Ok(response) = http.get(&url).bearer_auth(&token).send().await else {
                    return false;
                };
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                // Throttled: 429 (the simulator's default), or 403 "Rate Limit Exceeded".
                if status.as_u16() == 429
                    || (status.as_u16() == 403 && body.contains("Rate Limit Exceeded"))
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                return status.is_success();
            }
        }
    });
    let ok = futures::future::join_all(tasks).await;
    rows.push(Row {
        mode: "naive unbounded",
        wall: start.elapsed(),
        requests: sim.stats().api_requests - before.api_requests,
        throttled: sim.stats().throttled - before.throttled,
        errors: ok.iter().filter(|ok| !**ok).count(),
    });

    // (3) The client's governed bulk helper.
    let ours = client(&sim, &mode_tokens[2]);
    let before = sim.stats();
    let start = Instant::now();
    let results = ours.show_tokens(&user, lookups.clone()).await;
    let ours_row = Row {
        mode: "tokendesk show_tokens",
        wall: start.elapsed(),
        requests: sim.stats().api_requests - before.api_requests,
        throttled: sim.stats().throttled - before.throttled,
        errors: results.iter().filter(|r| r.is_err()).count(),
    };
    let ours_stats = ours.stats();
    rows.push(ours_row);

    let sequential = rows[0].wall.as_secs_f64();
    println!(
        "{:<22} {:>10} {:>10} {:>9} {:>10} {:>7} {:>8}",
        "mode", "wall (s)", "lookups/s", "requests", "throttled", "errors", "speedup"
    );
    for row in &rows {
        let secs = row.wall.as_secs_f64();
        println!(
            "{:<22} {:>10.2} {:>10.1} {:>9} {:>10} {:>7} {:>7.1}x",
            row.mode,
            secs,
            n as f64 / secs,
            row.requests,
            row.throttled,
            row.errors,
            sequential / secs
        );
    }
    println!(
        "\nclient counters (governed mode): {} requests, {} throttled, {} retries, final concurrency limit {}",
        ours_stats.requests, ours_stats.throttled, ours_stats.retries, ours_stats.concurrency_limit
    );
    sim.shutdown().await;

    let ours = &rows[2];
    if ours.throttled > 0 || ours_stats.throttled > 0 || ours.errors > 0 {
        eprintln!("FAIL: the governed mode was throttled or had errors");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

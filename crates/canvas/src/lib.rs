//! A typed async client for the part of the Canvas LMS REST API that manages access tokens
//! (see `shared/canvas-api.md`): users, account user search, and the token endpoints, with
//! typed errors, retries with backoff, and a throttle-aware concurrency governor.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tokendesk_canvas::CanvasError> {
//! use tokendesk_canvas::{CanvasClient, NewToken, UserRef};
//! let client = CanvasClient::builder("https://canvas.example.edu", "secret".into()).build()?;
//! let me = client.get_user(&UserRef::Self_).await?;
//! let created = client.create_token(&UserRef::Id(me.id), &NewToken::new("sync")).await?;
//! println!("created token {} ({})", created.token.id, created.token.hint());
//! # Ok(()) }
//! ```

mod client;
mod error;
mod governor;
mod ids;
mod link;
mod model;

pub use client::{CanvasClient, CanvasClientBuilder, ClientStats};
pub use error::{CanvasError, TokenRejection};
pub use governor::ThrottleConfig;
pub use ids::{CanvasAccountId, CanvasTokenId, CanvasUserId, TokenRef, UserRef};
pub use link::find_rel;
pub use model::{CreatedToken, NewToken, Token, TokenState, TokenUpdate, User, token_hint};
pub use secrecy::{ExposeSecret, SecretString};

//! tokendesk: request, approve, create, deliver, activate and revoke Canvas LMS access tokens.

pub mod cli;

//! Getting a token to its owner: the sealed envelope and the email that carries its link.

pub mod email;
pub mod envelope;

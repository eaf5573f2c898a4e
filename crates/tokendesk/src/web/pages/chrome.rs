//! What the shared layout shows around every page.

use super::assets;

/// A message left for the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub ok: bool,
    pub message: String,
}

/// One entry of the navigation.
#[derive(Debug, Clone)]
pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// What the shared layout shows.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    /// Empty when nobody is signed in.
    pub login: String,
    pub roles: String,
    pub nav: Vec<NavItem>,
    pub flash: Option<Flash>,
    pub csrf: String,
    pub css: &'static str,
    /// Where the Sign out button posts, when people sign in to tokendesk itself (OIDC, demo).
    pub sign_out: Option<&'static str>,
}

impl Chrome {
    /// The layout for someone not signed in.
    pub fn anonymous(title: &str) -> Chrome {
        Chrome {
            title: title.to_owned(),
            login: String::new(),
            roles: String::new(),
            nav: Vec::new(),
            flash: None,
            csrf: String::new(),
            css: assets::css_url(),
            sign_out: None,
        }
    }
}

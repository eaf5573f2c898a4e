//! Who may do what. Everyone signed in is a requester; other roles come from configuration.

use super::Login;

/// The roles a person holds beyond requester.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    pub approver: bool,
    pub helpdesk: bool,
    pub auditor: bool,
    pub admin: bool,
}

impl Roles {
    /// See the queue, approve, deny, retry.
    pub fn can_review(self) -> bool {
        self.approver || self.admin
    }
    /// Look anyone up and revoke anyone's token.
    pub fn can_support(self) -> bool {
        self.helpdesk || self.admin
    }
    /// Read other people's requests and tokens.
    pub fn can_look_up_people(self) -> bool {
        self.can_review() || self.can_support()
    }
    /// Read and export the audit trail.
    pub fn can_audit(self) -> bool {
        self.auditor || self.admin
    }

    /// The roles named in `text` (comma-separated role names, as [`Roles::held_names`] writes
    /// them); unknown names give nothing.
    pub fn from_names(text: &str) -> Roles {
        let mut roles = Roles::default();
        for name in text.split(',').map(str::trim) {
            match name {
                "approver" => roles.approver = true,
                "helpdesk" => roles.helpdesk = true,
                "auditor" => roles.auditor = true,
                "admin" => roles.admin = true,
                _ => {}
            }
        }
        roles
    }

    /// The roles held beyond requester, comma-separated (what [`Roles::from_names`] reads).
    pub fn held_names(self) -> String {
        self.names()
            .into_iter()
            .filter(|n| *n != "requester")
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every role either holds.
    pub fn union(self, other: Roles) -> Roles {
        Roles {
            approver: self.approver || other.approver,
            helpdesk: self.helpdesk || other.helpdesk,
            auditor: self.auditor || other.auditor,
            admin: self.admin || other.admin,
        }
    }

    /// The role names, for display: always `requester`, then the others held.
    pub fn names(self) -> Vec<&'static str> {
        let mut names = vec!["requester"];
        for (held, name) in [
            (self.approver, "approver"),
            (self.helpdesk, "helpdesk"),
            (self.auditor, "auditor"),
            (self.admin, "admin"),
        ] {
            if held {
                names.push(name);
            }
        }
        names
    }
}

/// A signed-in person acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub login: Login,
    pub roles: Roles,
}

impl Actor {
    pub fn is(&self, login: &Login) -> bool {
        &self.login == login
    }

    /// Whether this is a service key (`key:NAME`), which acts with its one role and has no
    /// requester's rights of its own.
    pub fn is_service_key(&self) -> bool {
        self.login.is_service_key()
    }

    /// The role names to show: a service key's role alone, a person's with `requester` first.
    pub fn role_names(&self) -> Vec<&'static str> {
        let mut names = self.roles.names();
        if self.is_service_key() {
            names.retain(|n| *n != "requester");
        }
        names
    }
}

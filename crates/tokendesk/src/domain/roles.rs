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
}

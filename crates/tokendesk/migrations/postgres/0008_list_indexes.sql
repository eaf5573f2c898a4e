-- Every list a page or the API shows is served by an index (issue 16): everyone's requests
-- in order of creation (the approvers' list without a state), a token's renewals, the audit
-- trail narrowed by action or by time, and the mailbox's messages, newest sent first.
-- tests/it/store.rs asks each backend for every list query's plan and fails on a full scan.
CREATE INDEX requests_by_created ON requests (created_at, id);
CREATE INDEX requests_renewing ON requests (renews);
CREATE INDEX audit_by_action ON audit_events (action, seq);
CREATE INDEX audit_by_at ON audit_events (at, seq);
CREATE INDEX emails_sent ON emails (state, sent_at, id);
CREATE INDEX emails_sent_to ON emails (to_login, state, sent_at, id);

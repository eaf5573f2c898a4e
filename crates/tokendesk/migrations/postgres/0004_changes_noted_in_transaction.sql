-- The writing instance drops a changed request's cached view when its transaction commits
-- (src/store/tx.rs). Which requests changed, the change trigger of migration 3 now notes itself,
-- in the transaction-local setting tokendesk.changed (comma-separated ids), so that no write
-- path has to remember to say so. The notice to the other instances stays as it was.

CREATE OR REPLACE FUNCTION tokendesk_request_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed_row JSONB := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
    changed TEXT := changed_row ->> (CASE WHEN TG_TABLE_NAME = 'requests' THEN 'id' ELSE 'request_id' END);
BEGIN
    PERFORM pg_notify('tokendesk_request_changed', changed);
    PERFORM set_config(
        'tokendesk.changed',
        COALESCE(current_setting('tokendesk.changed', true), '') || changed || ',',
        true
    );
    RETURN NULL;
END
$$;

-- The writing instance drops a changed request's cached view when its transaction commits
-- (src/store/tx.rs). Which requests changed, the change trigger notes itself, in the
-- transaction-local setting tokendesk.changed (comma-separated ids), so that no write path has
-- to remember to say so. The notice to the other instances stays as it was.

CREATE OR REPLACE FUNCTION tokendesk_request_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed BIGINT;
BEGIN
    IF TG_TABLE_NAME = 'requests' THEN
        IF TG_OP = 'DELETE' THEN changed := OLD.id; ELSE changed := NEW.id; END IF;
    ELSE
        IF TG_OP = 'DELETE' THEN changed := OLD.request_id; ELSE changed := NEW.request_id; END IF;
    END IF;
    PERFORM pg_notify('tokendesk_request_changed', changed::text);
    PERFORM set_config(
        'tokendesk.changed',
        COALESCE(current_setting('tokendesk.changed', true), '') || changed::text || ',',
        true
    );
    RETURN NULL;
END
$$;

-- Each instance caches status look-ups in memory (src/store/views.rs). Whatever changes what a
-- look-up shows (a request's state, its token, its envelopes) is announced to every instance on
-- the channel tokendesk_request_changed, with the request id as payload. NOTIFY is
-- transactional: the notice is delivered when, and only if, the writing transaction commits.
-- A new request needs no notice (no instance can hold a view of it yet).

CREATE FUNCTION tokendesk_request_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed BIGINT;
BEGIN
    IF TG_TABLE_NAME = 'requests' THEN
        IF TG_OP = 'DELETE' THEN changed := OLD.id; ELSE changed := NEW.id; END IF;
    ELSE
        IF TG_OP = 'DELETE' THEN changed := OLD.request_id; ELSE changed := NEW.request_id; END IF;
    END IF;
    PERFORM pg_notify('tokendesk_request_changed', changed::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER requests_changed AFTER UPDATE OR DELETE ON requests
    FOR EACH ROW EXECUTE FUNCTION tokendesk_request_changed();
CREATE TRIGGER tokens_changed AFTER INSERT OR UPDATE OR DELETE ON tokens
    FOR EACH ROW EXECUTE FUNCTION tokendesk_request_changed();
CREATE TRIGGER envelopes_changed AFTER INSERT OR UPDATE OR DELETE ON envelopes
    FOR EACH ROW EXECUTE FUNCTION tokendesk_request_changed();

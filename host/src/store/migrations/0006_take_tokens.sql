-- Dialgate schema, version 6: a request's rate-limit buckets taken together in one
-- call. `dialgate_take_tokens` refills each bucket of `keys` (given in key order, so
-- two calls over the same buckets lock them in the same order and never deadlock),
-- locks it, and takes one token from every bucket only if each has one: a request
-- denied by one bucket costs nothing from the others. It returns every bucket's tokens
-- as found (refilled, before taking).
CREATE FUNCTION dialgate_take_tokens(
    keys bytea[],
    per_ms double precision[],
    burst double precision[],
    now_ms bigint
) RETURNS double precision[] LANGUAGE plpgsql AS $$
DECLARE
    n integer := cardinality(keys);
    found double precision[] := '{}';
    stored rate_buckets%ROWTYPE;
BEGIN
    FOR i IN 1..n LOOP
        -- A missing bucket is created full; either way the row is locked and read.
        INSERT INTO rate_buckets AS b (k, tokens, at_ms, full_at_ms)
        VALUES (keys[i], burst[i], now_ms, now_ms)
        ON CONFLICT (k) DO UPDATE SET at_ms = b.at_ms
        RETURNING b.* INTO stored;
        found[i] := LEAST(burst[i], stored.tokens + GREATEST(now_ms - stored.at_ms, 0) * per_ms[i]);
    END LOOP;
    IF EXISTS (SELECT 1 FROM unnest(found) AS t WHERE t < 1) THEN
        RETURN found;
    END IF;
    FOR i IN 1..n LOOP
        UPDATE rate_buckets AS b SET
            tokens = found[i] - 1,
            at_ms = GREATEST(b.at_ms, now_ms),
            full_at_ms = GREATEST(b.at_ms, now_ms) + CEIL((burst[i] - found[i] + 1) / per_ms[i])::bigint
        WHERE b.k = keys[i];
    END LOOP;
    RETURN found;
END
$$;

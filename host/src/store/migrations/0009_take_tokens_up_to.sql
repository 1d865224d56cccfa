-- Dialgate schema, version 9: `dialgate_take_tokens` with a fifth argument, `wants`:
-- how many tokens to take from each bucket at most. As in version 6 the buckets are
-- locked in the given (key) order and taken from all or none; when every bucket holds
-- a token, each gives up to its `wants[i]` of what it holds (at least one), so a
-- replica can take a small reserve of a hot bucket in one call and spend it without
-- coming back. A bucket's row is locked by reading it (`FOR UPDATE`) and written once;
-- only a missing bucket is inserted (`held`, not `found`, names the tokens: `FOUND` is
-- PL/pgSQL's own). Returns every bucket's tokens as found (refilled,
-- before taking); the caller derives what was taken from them. The four-argument
-- function of version 6, which nothing calls any more, is dropped.
CREATE FUNCTION dialgate_take_tokens(
    keys bytea[],
    per_ms double precision[],
    burst double precision[],
    now_ms bigint,
    wants double precision[]
) RETURNS double precision[] LANGUAGE plpgsql AS $$
DECLARE
    n integer := cardinality(keys);
    held double precision[] := '{}';
    stored rate_buckets%ROWTYPE;
    taking double precision;
BEGIN
    FOR i IN 1..n LOOP
        SELECT * INTO stored FROM rate_buckets WHERE k = keys[i] FOR UPDATE;
        IF NOT FOUND THEN
            -- A missing bucket is created full; a concurrent creation wins and is read.
            INSERT INTO rate_buckets AS b (k, tokens, at_ms, full_at_ms)
            VALUES (keys[i], burst[i], now_ms, now_ms)
            ON CONFLICT (k) DO UPDATE SET at_ms = b.at_ms
            RETURNING b.* INTO stored;
        END IF;
        held[i] := LEAST(burst[i], stored.tokens + GREATEST(now_ms - stored.at_ms, 0) * per_ms[i]);
    END LOOP;
    IF EXISTS (SELECT 1 FROM unnest(held) AS t WHERE t < 1) THEN
        RETURN held;
    END IF;
    FOR i IN 1..n LOOP
        taking := GREATEST(1, LEAST(wants[i], FLOOR(held[i])));
        UPDATE rate_buckets AS b SET
            tokens = held[i] - taking,
            at_ms = GREATEST(b.at_ms, now_ms),
            full_at_ms = GREATEST(b.at_ms, now_ms) + CEIL((burst[i] - held[i] + taking) / per_ms[i])::bigint
        WHERE b.k = keys[i];
    END LOOP;
    RETURN held;
END
$$;

DROP FUNCTION dialgate_take_tokens(bytea[], double precision[], double precision[], bigint);

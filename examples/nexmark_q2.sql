-- Nexmark q2 (selection): bids on a handful of auctions, from the built-in generator.
-- Run: laminardb run examples/nexmark_q2.sql
CREATE SOURCE bid (
    auction BIGINT NOT NULL, bidder BIGINT NOT NULL, price BIGINT NOT NULL,
    channel VARCHAR NOT NULL, url VARCHAR NOT NULL, date_time TIMESTAMP NOT NULL, extra VARCHAR NOT NULL,
    WATERMARK FOR date_time AS date_time - INTERVAL '100' MILLISECOND
) FROM DATAGEN (kind = 'nexmark', table = 'bid', events = '20000', seed = '42');

CREATE MATERIALIZED VIEW q2 AS
SELECT auction, price, date_time
FROM bid
WHERE auction % 123 = 0;

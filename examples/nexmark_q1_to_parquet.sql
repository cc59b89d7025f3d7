-- Nexmark q1 (projection): bid prices converted to euros, written to a Parquet file,
-- with a live view of the expensive ones.
-- Run: laminardb run examples/nexmark_q1_to_parquet.sql
CREATE SOURCE bid (WATERMARK FOR date_time AS date_time - INTERVAL '100' MILLISECOND)
FROM DATAGEN (kind = 'nexmark', table = 'bid', events = '100000', seed = '1');

CREATE SINK q1_out INTO FILE (path = 'out/nexmark_q1.parquet', format = 'parquet') AS
SELECT auction, bidder, CAST(price * 0.908 AS BIGINT) AS price_eur, date_time
FROM bid;

CREATE MATERIALIZED VIEW expensive AS
SELECT auction, bidder, price, upper(channel) AS channel, date_time
FROM bid
WHERE price > 9500000;

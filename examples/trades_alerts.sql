-- Trade alerts: large trades from the built-in market generator, classified and written
-- as CSV, with a live stream of the largest ones.
-- Run: laminardb run examples/trades_alerts.sql
CREATE SOURCE trades (symbol VARCHAR, price DOUBLE, volume BIGINT, ts TIMESTAMP,
    WATERMARK FOR ts AS ts - INTERVAL '200' MILLISECOND)
FROM DATAGEN (kind = 'trades', symbols = '20', events = '50000', seed = '3');

CREATE STREAM large_trades AS
SELECT symbol, price, volume, round(price * volume, 2) AS notional,
       CASE WHEN price * volume > 350000 THEN 'block' ELSE 'large' END AS size,
       ts
FROM trades
WHERE price * volume > 250000;

CREATE SINK alerts INTO FILE (path = 'out/large_trades.csv', format = 'csv') FROM large_trades;

CREATE MATERIALIZED VIEW blocks AS
SELECT symbol, notional, ts FROM large_trades WHERE size = 'block';

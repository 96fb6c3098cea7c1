-- Redemptions of a reporter's points (爱心卡), written by dashboard-api (POST
-- /v1/reporters/{reporter_id}/redemptions), one row per (reporter, Idempotency-Key): a retried
-- request finds its row and gets the first answer, and a row written twice (a retry racing a
-- crash) folds into one; readers count each key once. balance_after is the balance the answer
-- reported. No personal data: reporter_id and redeemed_by are tokens' public ids.
CREATE TABLE IF NOT EXISTS redemptions
(
    reporter_id String,
    idempotency_key String,
    points UInt32,
    note String,
    redeemed_by String,
    at_ms UInt64,
    balance_after Int64
)
ENGINE = ReplacingMergeTree
ORDER BY (reporter_id, idempotency_key);

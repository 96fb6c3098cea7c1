-- Logs the sink starts by itself when the broker lost the tail of the current one (records it
-- had acknowledged, and the sink had stored, are gone: a dev broker killed before its journal
-- read them, an unclean leader election). The broker's log still holds the records up to
-- continues_after, the same ones the sink stored from them (it checks the record there), so
-- the new log is the old one up to that offset and is read after it; the records that take the
-- lost offsets are new. -1 for logs started any other way (their first read starts at the log's
-- start). See sink/README.md, "Reset Kafka logs", and docs/ARCHITECTURE.md §7.
--
-- The sink checks system.columns before adding a column, so the migration can run again.
ALTER TABLE kafka_logs ADD COLUMN continues_after Int64 DEFAULT -1;

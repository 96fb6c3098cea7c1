-- The governance indicators (docs/ARCHITECTURE.md §6) are computed from clue_events as of any
-- instant. mean_hours_to_close needs the working time from acceptance to closure by the district
-- calendar; the clue processor measures it once, on the `verified` fact, and it is stored here
-- (null on every other fact and on facts written before the processor measured it). The sink
-- checks system.columns before adding, so the migration can run again.
ALTER TABLE clue_events ADD COLUMN working_ms Nullable(UInt64);

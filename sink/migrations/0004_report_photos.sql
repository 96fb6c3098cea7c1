-- The photo URLs of a report (Open311 `media_url`), on its report fact (seq 0); empty on every
-- other fact. The sink checks system.columns before adding, so the migration can run again.
ALTER TABLE clue_events ADD COLUMN photos Array(String) DEFAULT emptyArrayString();

-- The closed loop worked by street offices, departments and the district (supervision,
-- postponement requests and approvals, withdrawal, ratings, overdue facts), projected onto the
-- latest state of each clue and onto every fact. The sink checks system.columns before adding,
-- so the migration can run again; every column has a default, so rows written before it read as
-- "none yet".
--
-- clues: counts of the facts of each kind (postpone_count, existing, counts approved
-- postponements), whether a postponement request waits for the district (postpone_pending, with
-- the hours asked), the department the clue is dispatched to now (assigned_department: empty
-- before dispatch and after a return; department keeps the last one dispatched to), the last
-- action taken by a person (the action's name, e.g. supervise; the processor's overdue facts do
-- not count) and the role that took it, the rating (0 = not rated), and yellow_at_ms, the instant
-- only 20% of the limit's working time remains (0 in rows older than this column).
ALTER TABLE clues ADD COLUMN yellow_at_ms UInt64 DEFAULT 0;
ALTER TABLE clues ADD COLUMN assigned_department String DEFAULT '';
ALTER TABLE clues ADD COLUMN withdrawn_at_ms UInt64 DEFAULT 0;
ALTER TABLE clues ADD COLUMN returned_count UInt16 DEFAULT 0;
ALTER TABLE clues ADD COLUMN verify_count UInt16 DEFAULT 0;
ALTER TABLE clues ADD COLUMN supervise_count UInt16 DEFAULT 0;
ALTER TABLE clues ADD COLUMN supervised_at_ms UInt64 DEFAULT 0;
ALTER TABLE clues ADD COLUMN postpone_request_count UInt16 DEFAULT 0;
ALTER TABLE clues ADD COLUMN postpone_denied_count UInt16 DEFAULT 0;
ALTER TABLE clues ADD COLUMN postpone_pending UInt8 DEFAULT 0;
ALTER TABLE clues ADD COLUMN postpone_requested_hours UInt32 DEFAULT 0;
ALTER TABLE clues ADD COLUMN overdue_count UInt16 DEFAULT 0;
ALTER TABLE clues ADD COLUMN rating UInt8 DEFAULT 0;
ALTER TABLE clues ADD COLUMN rated_at_ms UInt64 DEFAULT 0;
ALTER TABLE clues ADD COLUMN last_action String DEFAULT '';
ALTER TABLE clues ADD COLUMN last_actor_role String DEFAULT '';
ALTER TABLE clues ADD COLUMN last_action_at_ms UInt64 DEFAULT 0;
-- clue_events: who caused each fact (role: reporter, street, department, district, system; the
-- street or department code it acted for; the token's public id, never a secret), the rating of
-- a rated fact and the working hours of postponement facts. New fact types (postpone_requested,
-- postpone_denied, supervised, withdrawn, rated, overdue) need no schema change: fact_type is a
-- String.
ALTER TABLE clue_events ADD COLUMN actor_role String DEFAULT '';
ALTER TABLE clue_events ADD COLUMN actor_scope String DEFAULT '';
ALTER TABLE clue_events ADD COLUMN actor_id String DEFAULT '';
ALTER TABLE clue_events ADD COLUMN rating UInt8 DEFAULT 0;
ALTER TABLE clue_events ADD COLUMN working_hours UInt32 DEFAULT 0;

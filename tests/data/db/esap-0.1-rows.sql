-- Rows as esap-spawner 0.1 wrote them (ids 1, 2, ... in insertion order): the salt, spawns
-- that succeeded, were refused and failed, staging requests finished and in flight, and
-- availability samples. Plain SQL for SQLite and PostgreSQL alike.
INSERT INTO esap_settings ("key", value) VALUES
  ('user_hash_salt', '6f1c0e5bd7a94e3c8a2b1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f00');

INSERT INTO esap_spawns (started_at, finished_at, duration_seconds, profile, user_hash,
  outcome, failure_reason, validate_seconds, staging_seconds, scheduling_seconds,
  image_seconds, startup_seconds, datasets, pod_name) VALUES
  ('2026-11-20 12:00:00', '2026-11-20 12:01:00', 60.0, 'gpu',
   'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1', 'success', NULL,
   0.05, 12.5, 7.5, 34.0, 5.95, 2, 'jupyter-alice'),
  ('2026-11-20 12:05:00', '2026-11-20 12:05:00', 0.0, 'gpu',
   'b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2', 'refused',
   'profile gpu is at its limit of 2 servers', 0.04, NULL, NULL, NULL, NULL, 0, NULL),
  ('2026-11-20 12:10:00', '2026-11-20 12:15:00', 300.0, 'small',
   'b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2', 'failure',
   'the pod did not start within 300 s', 0.03, NULL, 290.0, NULL, NULL, 0, 'jupyter-bob');

INSERT INTO esap_staging (spawn_id, user_hash, did, destination_rse, rule_id, created_at,
  updated_at, finished_at, state, files_total, files_done, bytes_total, bytes_done, outcome,
  reason) VALUES
  (1, 'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1', 'lofar:L123456',
   'HUB_LOCAL_DISK', '0f1e2d3c4b5a69788796a5b4c3d2e1f0', '2026-11-20 12:00:00',
   '2026-11-20 12:00:12', '2026-11-20 12:00:12', 'OK', 4, 4, 4000000000, 4000000000,
   'success', NULL),
  (NULL, 'a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1', 'lofar:L654321',
   'HUB_LOCAL_DISK', '1a2b3c4d5e6f708192a3b4c5d6e7f809', '2026-11-20 12:20:00',
   '2026-11-20 12:21:00', NULL, 'REPLICATING', 10, 3, 10000000000, 3000000000, NULL, NULL);

INSERT INTO esap_availability (time, profile, can_start_now, running, status) VALUES
  ('2026-11-20 12:00:00', 'small', 5, 1, 'available'),
  ('2026-11-20 12:00:00', 'gpu', 0, 2, 'full'),
  ('2026-11-20 12:01:00', 'small', NULL, NULL, 'unknown');

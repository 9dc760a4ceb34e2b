-- The esap tables exactly as esap-spawner 0.1 (before schema migrations) created them in
-- SQLite: SQLAlchemy's CREATE statements, read back from sqlite_master
-- (trailing spaces trimmed). Frozen: never edit.
CREATE TABLE esap_settings (
	"key" VARCHAR(64) NOT NULL,
	value TEXT NOT NULL,
	PRIMARY KEY ("key")
);

CREATE TABLE esap_spawns (
	id INTEGER NOT NULL,
	started_at DATETIME NOT NULL,
	finished_at DATETIME NOT NULL,
	duration_seconds FLOAT NOT NULL,
	profile VARCHAR(63) NOT NULL,
	user_hash VARCHAR(64) NOT NULL,
	outcome VARCHAR(16) NOT NULL,
	failure_reason TEXT,
	validate_seconds FLOAT,
	staging_seconds FLOAT,
	scheduling_seconds FLOAT,
	image_seconds FLOAT,
	startup_seconds FLOAT,
	datasets INTEGER NOT NULL,
	pod_name VARCHAR(253),
	PRIMARY KEY (id)
);

CREATE INDEX ix_esap_spawns_started_at ON esap_spawns (started_at);

CREATE INDEX ix_esap_spawns_profile_outcome ON esap_spawns (profile, outcome, started_at);

CREATE TABLE esap_availability (
	id INTEGER NOT NULL,
	time DATETIME NOT NULL,
	profile VARCHAR(63) NOT NULL,
	can_start_now INTEGER,
	running INTEGER,
	status VARCHAR(16) NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_esap_availability_profile_time ON esap_availability (profile, time);

CREATE TABLE esap_staging (
	id INTEGER NOT NULL,
	spawn_id INTEGER,
	user_hash VARCHAR(64) NOT NULL,
	did VARCHAR(512) NOT NULL,
	destination_rse VARCHAR(255) NOT NULL,
	rule_id VARCHAR(64),
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	finished_at DATETIME,
	state VARCHAR(32),
	files_total INTEGER NOT NULL,
	files_done INTEGER NOT NULL,
	bytes_total BIGINT NOT NULL,
	bytes_done BIGINT NOT NULL,
	outcome VARCHAR(16),
	reason TEXT,
	PRIMARY KEY (id),
	FOREIGN KEY(spawn_id) REFERENCES esap_spawns (id) ON DELETE SET NULL
);

CREATE INDEX ix_esap_staging_created_at ON esap_staging (created_at);

CREATE UNIQUE INDEX uq_esap_staging_rule_in_flight ON esap_staging (rule_id) WHERE finished_at IS NULL;

CREATE UNIQUE INDEX uq_esap_staging_in_flight ON esap_staging (user_hash, did, destination_rse) WHERE finished_at IS NULL;

CREATE INDEX ix_esap_staging_rule_id ON esap_staging (rule_id);

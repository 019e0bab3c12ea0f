"""The schema of the data home's SQLite database, as an append-only list of migrations (core/store.py
applies the ones a database has not seen yet, in order).
"""
from __future__ import annotations

# Each entry is one migration; its index + 1 is the schema version it produces. Never edit an
# applied migration: append a new one.
MIGRATIONS: list[str] = [
    # 1: the initial schema
    """
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_by TEXT,
        updated_at TEXT
    );
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('expert','reviewer','supervisor','admin')),
        active INTEGER NOT NULL DEFAULT 1,
        failed_logins INTEGER NOT NULL DEFAULT 0,
        locked_until REAL,
        created_at TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE glossary_entries (
        id TEXT PRIMARY KEY,
        canonical TEXT NOT NULL,
        reading TEXT NOT NULL DEFAULT '',
        en TEXT NOT NULL DEFAULT '',
        embed_text TEXT NOT NULL DEFAULT '',
        aliases TEXT NOT NULL DEFAULT '',
        distinct_from TEXT NOT NULL DEFAULT '',
        notes TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'approved',
        version INTEGER NOT NULL DEFAULT 1,
        updated_by TEXT,
        updated_at TEXT
    );
    CREATE TABLE labels (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        name_key TEXT NOT NULL,
        lang TEXT NOT NULL DEFAULT 'ja',
        entry_id TEXT REFERENCES glossary_entries(id),
        status TEXT NOT NULL CHECK (status IN ('proposed','approved','trained','retired','rejected','merged')),
        merged_into INTEGER REFERENCES labels(id),
        version INTEGER NOT NULL DEFAULT 1,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_by TEXT,
        updated_at TEXT
    );
    CREATE INDEX labels_name_key ON labels(name_key);
    CREATE INDEX labels_status ON labels(status);
    CREATE TABLE label_aliases (
        id INTEGER PRIMARY KEY,
        label_id INTEGER NOT NULL REFERENCES labels(id),
        text TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX label_aliases_label ON label_aliases(label_id);
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        label_id INTEGER NOT NULL REFERENCES labels(id),
        split TEXT NOT NULL CHECK (split IN ('train','holdout')),
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        original_name TEXT NOT NULL DEFAULT '',
        uploaded_by TEXT NOT NULL,
        uploaded_at TEXT NOT NULL
    );
    CREATE INDEX images_label ON images(label_id);
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        encoder TEXT NOT NULL,
        config TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'active',
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        idx INTEGER NOT NULL,
        label_ids TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued',
        created_at TEXT NOT NULL,
        UNIQUE (run_id, idx)
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        run_id INTEGER REFERENCES runs(id),
        payload TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL CHECK (status IN ('queued','running','done','failed','cancelled')),
        progress REAL NOT NULL DEFAULT 0,
        message TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}',
        worker TEXT,
        heartbeat_at REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        result TEXT,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX jobs_status ON jobs(status);
    CREATE TABLE metrics (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        trained_task INTEGER NOT NULL,
        eval_task INTEGER NOT NULL,
        acc REAL NOT NULL,
        acc_task_aware REAL,
        n_classes INTEGER NOT NULL,
        n_images INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (run_id, trained_task, eval_task)
    );
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        pid INTEGER,
        host TEXT,
        device TEXT,
        started_at TEXT,
        heartbeat_at REAL
    );
    CREATE TABLE embeddings (
        encoder TEXT NOT NULL,
        text TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        PRIMARY KEY (encoder, text)
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target_type TEXT NOT NULL,
        target_id TEXT,
        details TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_target ON audit(target_type, target_id);
    """,
    # 2: server-side login sessions (core/sessions.py). Only SHA-256 digests of the cookie token and
    # of the one-time ticket that sets the cookie are stored, so a copy of the database logs nobody in.
    """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        token_hash TEXT UNIQUE,
        ticket_hash TEXT UNIQUE,
        ticket_expires_at REAL,
        next_path TEXT NOT NULL DEFAULT '',
        user_id INTEGER NOT NULL REFERENCES users(id),
        created_at REAL NOT NULL,
        last_seen_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        revoked_at REAL,
        revoked_reason TEXT
    );
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE INDEX audit_action_at ON audit(action, at);
    """,
    # 3: each task keeps the configuration it was (or will be) trained with: the run's config plus that
    # task's overrides (core/runs.py), so an override on task k never leaks into task k+1 and the pages
    # show what was really used. Empty for tasks made before this column existed. metrics.rejected: the
    # fraction of that task's holdout images the "not a trained class" threshold rejects.
    """
    ALTER TABLE tasks ADD COLUMN config TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE metrics ADD COLUMN rejected REAL;
    """,
    # 4: update tasks and honest accuracies (issue 17 items 3, 5). tasks.kind: 'new' (new classes) or
    # 'update' (new images of classes the run already learned). task_images: the train images each done
    # task learned, so an update learns only images no task of the run has seen; tasks done before this
    # migration are taken to have learned their labels' train images uploaded before they finished.
    # metrics.n_correct: how many of the n_images holdout images were right (for the 95 % interval);
    # tasks.evaluation: per-class counts and the confusion matrix of the model after that task.
    """
    ALTER TABLE tasks ADD COLUMN kind TEXT NOT NULL DEFAULT 'new';
    ALTER TABLE tasks ADD COLUMN evaluation TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE metrics ADD COLUMN n_correct INTEGER;
    CREATE TABLE task_images (
        task_id INTEGER NOT NULL REFERENCES tasks(id),
        image_id INTEGER NOT NULL,
        label_id INTEGER NOT NULL,
        PRIMARY KEY (task_id, image_id)
    );
    CREATE INDEX task_images_label ON task_images(label_id);
    INSERT OR IGNORE INTO task_images (task_id, image_id, label_id)
        SELECT t.id, i.id, i.label_id FROM tasks t, json_each(t.label_ids) j, images i
        WHERE t.status = 'done' AND i.label_id = j.value AND i.split = 'train'
          AND i.uploaded_at <= COALESCE((SELECT MAX(a.at) FROM audit a WHERE a.action = 'task.done'
                                         AND a.target_type = 'task' AND a.target_id = CAST(t.id AS TEXT)),
                                        i.uploaded_at);
    """,
    # 5: a session belongs to a random, never-reused account identity (users.uid, set by core/users.py),
    # not only to the row id, which SQLite hands out again after a row is deleted by hand: a deleted
    # user's cookie must not log in as the next account that gets the same id.
    """
    ALTER TABLE users ADD COLUMN uid TEXT;
    UPDATE users SET uid = lower(hex(randomblob(16))) WHERE uid IS NULL;
    CREATE UNIQUE INDEX users_uid ON users(uid);
    ALTER TABLE sessions ADD COLUMN user_uid TEXT;
    UPDATE sessions SET user_uid = (SELECT uid FROM users WHERE users.id = sessions.user_id);
    """,
    # 6: each user's UI language (NULL: not chosen yet), so a reload or a new tab keeps it, and glossary
    # notes in Japanese beside the English ones (issue 21).
    """
    ALTER TABLE users ADD COLUMN lang TEXT;
    ALTER TABLE glossary_entries ADD COLUMN notes_ja TEXT NOT NULL DEFAULT '';
    """,
    # 7: API tokens of the inference service (core/deploy/tokens.py): only the SHA-256 of each token is
    # kept (it is shown once, at creation), with its scope; revoked rows stay for the audit trail.
    # predictions: what the line saw through a model bundle (core/deploy/predictions.py): the service and
    # folder/watch inference record model version, best class, score, decision and source per image.
    """
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        scope TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        revoked_at TEXT,
        revoked_by TEXT
    );
    CREATE TABLE predictions (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        run_id INTEGER,
        task INTEGER,
        model_version TEXT NOT NULL,
        source TEXT NOT NULL,
        label_id INTEGER,
        class_name TEXT NOT NULL DEFAULT '',
        score REAL,
        familiarity REAL,
        decision TEXT NOT NULL CHECK (decision IN ('class', 'unknown')),
        sha256 TEXT
    );
    CREATE INDEX predictions_run_at ON predictions(run_id, at);
    """,
]

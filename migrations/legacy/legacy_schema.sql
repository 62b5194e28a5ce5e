-- The legacy system's schema, as the migrator's tests, demo and benchmark use it (created by
-- `migrator generate-legacy`). Same columns as the new schema, but the columns the new schema
-- requires are nullable here: is_active, is_verified, status, priority, sender, message_type,
-- created_at, updated_at, started_at. Everything lives in one schema, as in the legacy monolith.
-- Kept outside migrations/ proper: sqlx embeds only NNN_name.sql files of that directory.
CREATE SCHEMA IF NOT EXISTS legacy;

CREATE TABLE IF NOT EXISTS legacy.users (
    id            uuid PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    email         text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    is_active     boolean,
    is_verified   boolean,
    created_at    timestamptz,
    updated_at    timestamptz
);

CREATE TABLE IF NOT EXISTS legacy.conversations (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL,
    title      text NOT NULL,
    status     text,
    created_at timestamptz,
    updated_at timestamptz,
    metadata   jsonb
);

CREATE TABLE IF NOT EXISTS legacy.messages (
    id              uuid PRIMARY KEY,
    conversation_id uuid NOT NULL,
    sender          text,
    content         text NOT NULL,
    message_type    text,
    created_at      timestamptz,
    metadata        jsonb
);

CREATE TABLE IF NOT EXISTS legacy.tasks (
    id              uuid PRIMARY KEY,
    conversation_id uuid,
    task_type       text NOT NULL,
    complexity      text,
    title           text NOT NULL,
    description     text,
    status          text,
    priority        integer,
    created_at      timestamptz,
    updated_at      timestamptz,
    started_at      timestamptz,
    completed_at    timestamptz,
    metadata        jsonb
);

CREATE TABLE IF NOT EXISTS legacy.task_executions (
    id                 uuid PRIMARY KEY,
    task_id            uuid NOT NULL,
    execution_strategy text NOT NULL,
    status             text,
    started_at         timestamptz,
    completed_at       timestamptz,
    error_message      text,
    metadata           jsonb
);

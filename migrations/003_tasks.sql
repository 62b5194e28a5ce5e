-- The orchestration service's schema. conversation_id refers to chat.conversations by value only.
CREATE SCHEMA IF NOT EXISTS orchestration;

CREATE TABLE orchestration.coding_tasks (
    id              uuid PRIMARY KEY,
    conversation_id uuid,
    task_type       text NOT NULL,
    complexity      text,
    title           text NOT NULL,
    description     text,
    status          text NOT NULL,
    priority        integer NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    started_at      timestamptz,
    completed_at    timestamptz,
    metadata        jsonb
);

CREATE TABLE orchestration.task_executions (
    id                 uuid PRIMARY KEY,
    task_id            uuid NOT NULL REFERENCES orchestration.coding_tasks (id),
    execution_strategy text NOT NULL,
    status             text NOT NULL,
    started_at         timestamptz NOT NULL,
    completed_at       timestamptz,
    error_message      text,
    metadata           jsonb
);

CREATE INDEX task_executions_task_id_idx ON orchestration.task_executions (task_id);

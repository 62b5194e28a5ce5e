-- The chat service's schema. user_id refers to auth.users by value only (no cross-schema foreign key).
CREATE SCHEMA IF NOT EXISTS chat;

CREATE TABLE chat.conversations (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL,
    title      text NOT NULL,
    status     text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    metadata   jsonb
);

CREATE INDEX conversations_user_id_idx ON chat.conversations (user_id);

CREATE TABLE chat.messages (
    id              uuid PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES chat.conversations (id),
    sender          text NOT NULL,
    content         text NOT NULL,
    message_type    text NOT NULL,
    created_at      timestamptz NOT NULL,
    metadata        jsonb
);

CREATE INDEX messages_conversation_id_idx ON chat.messages (conversation_id);

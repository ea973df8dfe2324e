CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    chat_id bigint NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    role text NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_chat_id_idx ON messages (chat_id);

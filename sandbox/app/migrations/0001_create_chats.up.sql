CREATE TABLE chats (
    id bigserial PRIMARY KEY,
    title text NOT NULL,
    model text NOT NULL,
    owner text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

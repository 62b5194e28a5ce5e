//! Storage: the same entities in the legacy layout (one `legacy` schema) or the new one (`auth`,
//! `chat`, `orchestration` schemas from `migrations/`). The columns are the same in both (the
//! legacy tables allow NULL where the new ones do not; this app never writes NULL there), so
//! `migrator copy` maps a row the legacy app wrote onto exactly the row the new app writes for
//! the same request (migrations/plan.toml copies every column as is).
//!
//! Every write is keyed by the client's entity id and idempotent; updates are last-writer-wins by
//! request time, so the primary and a shadow that receives the same writes in another order end
//! with the same row.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgDatabaseError, PgPool, PgRow};
use sqlx::FromRow;
use uuid::Uuid;

/// Which storage layout the process serves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// `migrations/legacy/legacy_schema.sql`.
    Legacy,
    /// `migrations/00*.sql`, applied by `migrator schema`.
    New,
}

/// Qualified table names of one flavor.
#[derive(Clone, Copy, Debug)]
pub struct Tables {
    pub users: &'static str,
    pub conversations: &'static str,
    pub messages: &'static str,
    pub tasks: &'static str,
    pub task_executions: &'static str,
}

impl Flavor {
    pub fn tables(self) -> Tables {
        match self {
            Flavor::Legacy => Tables {
                users: "legacy.users",
                conversations: "legacy.conversations",
                messages: "legacy.messages",
                tasks: "legacy.tasks",
                task_executions: "legacy.task_executions",
            },
            Flavor::New => Tables {
                users: "auth.users",
                conversations: "chat.conversations",
                messages: "chat.messages",
                tasks: "orchestration.coding_tasks",
                task_executions: "orchestration.task_executions",
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Flavor::Legacy => "legacy",
            Flavor::New => "new",
        }
    }

    /// How to create the missing schema, for the start-up error.
    fn schema_hint(self) -> &'static str {
        match self {
            Flavor::Legacy => "create it from migrations/legacy/legacy_schema.sql",
            Flavor::New => "apply the new schema with `migrator schema`",
        }
    }
}

const USER_COLUMNS: &str =
    "id, username, email, password_hash, is_active, is_verified, created_at, updated_at";
const CONVERSATION_COLUMNS: &str = "id, user_id, title, status, created_at, updated_at, metadata";
const MESSAGE_COLUMNS: &str =
    "id, conversation_id, sender, content, message_type, created_at, metadata";
const TASK_COLUMNS: &str =
    "id, conversation_id, task_type, complexity, title, description, status, \
     priority, created_at, updated_at, started_at, completed_at, metadata";

/// The start-up check found the schema missing or incomplete.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("the database has no table {table}: {hint}")]
    MissingTable { table: String, hint: &'static str },
    #[error("table {table} has no column {column}: {hint}")]
    MissingColumn {
        table: String,
        column: String,
        hint: &'static str,
    },
    #[error("cannot read the schema: {0}")]
    Database(#[from] sqlx::Error),
}

/// Checks that every table and column this flavor uses exists.
pub async fn check_schema(pool: &PgPool, flavor: Flavor) -> Result<(), SchemaError> {
    let tables = flavor.tables();
    let required = [
        (tables.users, USER_COLUMNS),
        (tables.conversations, CONVERSATION_COLUMNS),
        (tables.messages, MESSAGE_COLUMNS),
        (tables.tasks, TASK_COLUMNS),
        (tables.task_executions, "id, task_id"),
    ];
    for (table, columns) in required {
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        let present: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = $2",
        )
        .bind(schema)
        .bind(name)
        .fetch_all(pool)
        .await?;
        if present.is_empty() {
            return Err(SchemaError::MissingTable {
                table: table.to_string(),
                hint: flavor.schema_hint(),
            });
        }
        if let Some(column) = columns
            .split(", ")
            .find(|c| !present.iter().any(|p| p == c))
        {
            return Err(SchemaError::MissingColumn {
                table: table.to_string(),
                column: column.to_string(),
                hint: flavor.schema_hint(),
            });
        }
    }
    Ok(())
}

/// A stored user. The rows are also the test fixtures' typed read-back of both databases
/// (`tests/e2e`), so the API's JSON deserializes into them; the API never answers
/// `password_hash`, which then stays empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, FromRow)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    #[serde(skip)]
    pub password_hash: String,
    pub is_active: Option<bool>,
    pub is_verified: Option<bool>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, FromRow)]
pub struct Conversation {
    pub id: Uuid,
    pub user_id: Uuid,
    pub title: String,
    pub status: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub metadata: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, FromRow)]
pub struct Message {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub sender: Option<String>,
    pub content: String,
    pub message_type: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub metadata: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, FromRow)]
pub struct Task {
    pub id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub task_type: String,
    pub complexity: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub status: Option<String>,
    pub priority: Option<i32>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub metadata: Option<serde_json::Value>,
}

/// What a create did: inserted now, or found the same entity from an earlier identical write.
#[derive(Debug)]
pub struct Created<T> {
    pub inserted: bool,
    pub entity: T,
}

impl<T> Created<T> {
    fn inserted(entity: T) -> Created<T> {
        Created {
            inserted: true,
            entity,
        }
    }
}

/// The answer to a create whose id already exists: the stored entity if it is the same one (the
/// write is repeated), else a conflict naming `what`.
fn replay<T>(
    existing: Option<T>,
    same: impl FnOnce(&T) -> bool,
    what: String,
) -> Result<Created<T>, StoreError> {
    match existing {
        Some(entity) if same(&entity) => Ok(Created {
            inserted: false,
            entity,
        }),
        _ => Err(StoreError::Conflict(format!(
            "{what} exists with other values"
        ))),
    }
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The id (or a unique field) belongs to a different entity.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// Anything else; the message carries no row values (PostgreSQL's detail is not shown).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Unique violations name their constraint (never the values); foreign-key violations say what is
/// missing.
fn classify(error: sqlx::Error, missing_parent: &str) -> StoreError {
    if let Some(db) = error.as_database_error() {
        if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
            match pg.code() {
                "23505" => {
                    return StoreError::Conflict(format!(
                        "unique constraint {} is violated by another entity",
                        pg.constraint().unwrap_or("?")
                    ))
                }
                "23503" => return StoreError::NotFound(missing_parent.to_string()),
                _ => {}
            }
        }
    }
    StoreError::Database(error)
}

pub struct NewUser<'a> {
    pub id: Uuid,
    pub username: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
}

pub struct NewConversation<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub title: &'a str,
    pub metadata: Option<&'a serde_json::Value>,
}

pub struct NewMessage<'a> {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub sender: &'a str,
    pub content: &'a str,
    pub message_type: &'a str,
    pub metadata: Option<&'a serde_json::Value>,
}

pub struct NewTask<'a> {
    pub id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub task_type: &'a str,
    pub complexity: Option<&'a str>,
    pub title: &'a str,
    pub description: Option<&'a str>,
    pub priority: i32,
    pub metadata: Option<&'a serde_json::Value>,
}

/// Task states; the terminal ones set `completed_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

/// The database of one flavor.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    tables: Tables,
}

impl Store {
    pub fn new(pool: PgPool, flavor: Flavor) -> Store {
        Store {
            pool,
            tables: flavor.tables(),
        }
    }

    pub async fn create_user(
        &self,
        user: &NewUser<'_>,
        at: DateTime<Utc>,
    ) -> Result<Created<User>, StoreError> {
        let inserted: Option<User> = sqlx::query_as(&format!(
            "INSERT INTO {} ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, true, false, $5, $5)
             ON CONFLICT (id) DO NOTHING RETURNING {USER_COLUMNS}",
            self.tables.users
        ))
        .bind(user.id)
        .bind(user.username)
        .bind(user.email)
        .bind(user.password_hash)
        .bind(at)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| classify(e, "user"))?;
        if let Some(entity) = inserted {
            return Ok(Created::inserted(entity));
        }
        replay(
            self.user(user.id).await?,
            |e| {
                e.username == user.username
                    && e.email == user.email
                    && e.password_hash == user.password_hash
            },
            format!("user {}", user.id),
        )
    }

    /// One row of `table` by id.
    async fn by_id<T>(&self, table: &str, columns: &str, id: Uuid) -> Result<Option<T>, StoreError>
    where
        T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        Ok(
            sqlx::query_as(&format!("SELECT {columns} FROM {table} WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        self.by_id(self.tables.users, USER_COLUMNS, id).await
    }

    pub async fn create_conversation(
        &self,
        conversation: &NewConversation<'_>,
        at: DateTime<Utc>,
    ) -> Result<Created<Conversation>, StoreError> {
        let inserted: Option<Conversation> = sqlx::query_as(&format!(
            "INSERT INTO {} ({CONVERSATION_COLUMNS}) VALUES ($1, $2, $3, 'active', $4, $4, $5)
             ON CONFLICT (id) DO NOTHING RETURNING {CONVERSATION_COLUMNS}",
            self.tables.conversations
        ))
        .bind(conversation.id)
        .bind(conversation.user_id)
        .bind(conversation.title)
        .bind(at)
        .bind(conversation.metadata)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| classify(e, "user"))?;
        if let Some(entity) = inserted {
            return Ok(Created::inserted(entity));
        }
        // The title may have been renamed since; the owner identifies the same conversation.
        replay(
            self.conversation(conversation.id).await?,
            |e| e.user_id == conversation.user_id,
            format!("conversation {}", conversation.id),
        )
    }

    pub async fn conversation(&self, id: Uuid) -> Result<Option<Conversation>, StoreError> {
        self.by_id(self.tables.conversations, CONVERSATION_COLUMNS, id)
            .await
    }

    /// Renames unless a newer rename (later request time; equal times: the greater title) is
    /// already stored. Either way answers the stored conversation.
    pub async fn rename_conversation(
        &self,
        id: Uuid,
        title: &str,
        at: DateTime<Utc>,
    ) -> Result<Conversation, StoreError> {
        let updated: Option<Conversation> = sqlx::query_as(&format!(
            "UPDATE {} SET title = $2, updated_at = $3
             WHERE id = $1 AND (updated_at IS NULL OR (updated_at, title) < ($3, $2))
             RETURNING {CONVERSATION_COLUMNS}",
            self.tables.conversations
        ))
        .bind(id)
        .bind(title)
        .bind(at)
        .fetch_optional(&self.pool)
        .await?;
        match updated {
            Some(entity) => Ok(entity),
            None => self
                .conversation(id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("conversation {id}"))),
        }
    }

    pub async fn messages(&self, conversation_id: Uuid) -> Result<Vec<Message>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM {} WHERE conversation_id = $1 ORDER BY created_at, id",
            self.tables.messages
        ))
        .bind(conversation_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn create_message(
        &self,
        message: &NewMessage<'_>,
        at: DateTime<Utc>,
    ) -> Result<Created<Message>, StoreError> {
        // Checked explicitly so both layouts answer alike (only the new one has the foreign key).
        if self.conversation(message.conversation_id).await?.is_none() {
            return Err(StoreError::NotFound(format!(
                "conversation {}",
                message.conversation_id
            )));
        }
        let missing = format!("conversation {}", message.conversation_id);
        let inserted: Option<Message> = sqlx::query_as(&format!(
            "INSERT INTO {} ({MESSAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO NOTHING RETURNING {MESSAGE_COLUMNS}",
            self.tables.messages
        ))
        .bind(message.id)
        .bind(message.conversation_id)
        .bind(message.sender)
        .bind(message.content)
        .bind(message.message_type)
        .bind(at)
        .bind(message.metadata)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| classify(e, &missing))?;
        if let Some(entity) = inserted {
            return Ok(Created::inserted(entity));
        }
        // Messages are immutable: the same id is only the same write with the same content.
        replay(
            self.by_id(self.tables.messages, MESSAGE_COLUMNS, message.id)
                .await?,
            |e| {
                e.conversation_id == message.conversation_id
                    && e.content == message.content
                    && e.sender.as_deref() == Some(message.sender)
                    && e.message_type.as_deref() == Some(message.message_type)
            },
            format!("message {}", message.id),
        )
    }

    /// Deleting what is not there is a success: a repeated delete is the same write.
    pub async fn delete_message(&self, conversation_id: Uuid, id: Uuid) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "DELETE FROM {} WHERE id = $1 AND conversation_id = $2",
            self.tables.messages
        ))
        .bind(id)
        .bind(conversation_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn create_task(
        &self,
        task: &NewTask<'_>,
        at: DateTime<Utc>,
    ) -> Result<Created<Task>, StoreError> {
        let inserted: Option<Task> = sqlx::query_as(&format!(
            "INSERT INTO {} ({TASK_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $8, NULL, NULL, $9)
             ON CONFLICT (id) DO NOTHING RETURNING {TASK_COLUMNS}",
            self.tables.tasks
        ))
        .bind(task.id)
        .bind(task.conversation_id)
        .bind(task.task_type)
        .bind(task.complexity)
        .bind(task.title)
        .bind(task.description)
        .bind(task.priority)
        .bind(at)
        .bind(task.metadata)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(entity) = inserted {
            return Ok(Created::inserted(entity));
        }
        replay(
            self.task(task.id).await?,
            |e| {
                e.conversation_id == task.conversation_id
                    && e.task_type == task.task_type
                    && e.title == task.title
            },
            format!("task {}", task.id),
        )
    }

    pub async fn task(&self, id: Uuid) -> Result<Option<Task>, StoreError> {
        self.by_id(self.tables.tasks, TASK_COLUMNS, id).await
    }

    /// Status, `updated_at` and `completed_at` are last-writer-wins by request time (equal
    /// times: the greater status name); `started_at` is the earliest `running` write's time.
    /// Both rules give the same row whatever order the writes arrive in.
    pub async fn set_task_status(
        &self,
        id: Uuid,
        status: TaskStatus,
        at: DateTime<Utc>,
    ) -> Result<Task, StoreError> {
        const NEWER: &str =
            "(updated_at IS NULL OR (updated_at, coalesce(status, '')) < ($3, $2::text))";
        let updated: Option<Task> = sqlx::query_as(&format!(
            "UPDATE {} SET
                 started_at = CASE WHEN $2 = 'running' THEN least(coalesce(started_at, $3), $3)
                                   ELSE started_at END,
                 completed_at = CASE WHEN {NEWER} THEN (CASE WHEN $4 THEN $3 END)
                                     ELSE completed_at END,
                 status = CASE WHEN {NEWER} THEN $2 ELSE status END,
                 updated_at = CASE WHEN {NEWER} THEN $3 ELSE updated_at END
             WHERE id = $1
             RETURNING {TASK_COLUMNS}",
            self.tables.tasks
        ))
        .bind(id)
        .bind(status.as_str())
        .bind(at)
        .bind(status.is_terminal())
        .fetch_optional(&self.pool)
        .await?;
        updated.ok_or_else(|| StoreError::NotFound(format!("task {id}")))
    }

    /// Deletes the task and its executions (the new layout's foreign key needs that order).
    pub async fn delete_task(&self, id: Uuid) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "DELETE FROM {} WHERE task_id = $1",
            self.tables.task_executions
        ))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!("DELETE FROM {} WHERE id = $1", self.tables.tasks))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Tasks of the user's conversations, oldest first.
    pub async fn user_tasks(&self, user_id: Uuid) -> Result<Vec<Task>, StoreError> {
        let columns = TASK_COLUMNS
            .split(", ")
            .map(|c| format!("t.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(sqlx::query_as(&format!(
            "SELECT {columns} FROM {} t JOIN {} c ON c.id = t.conversation_id
             WHERE c.user_id = $1 ORDER BY t.created_at, t.id",
            self.tables.tasks, self.tables.conversations
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

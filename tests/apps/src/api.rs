//! The HTTP API, the same on both flavors, under the cutover filter's path prefixes:
//! chat (`/api/chat`, `/api/conversations`) and orchestration (`/api/orchestration`).
//!
//! | method and path | what | answer |
//! |---|---|---|
//! | `POST /api/chat/users` `{id, username, email, password_hash}` | create a user | 201, 200 if the same user exists, 409 |
//! | `GET /api/chat/users/{id}` | a user | 200, 404 |
//! | `POST /api/conversations` `{id, user_id, title, metadata?}` | create a conversation | 201, 200, 409 |
//! | `PATCH /api/conversations/{id}` `{title}` | rename | 200 (the stored conversation), 404 |
//! | `GET /api/conversations/{id}` | the conversation with `messages` | 200, 404 |
//! | `POST /api/conversations/{id}/messages` `{id, content, sender?, message_type?, metadata?}` | post a message | 201, 200, 404, 409 |
//! | `DELETE /api/conversations/{id}/messages/{message_id}` | delete a message | 204 (also when absent) |
//! | `POST /api/orchestration/tasks` `{id, task_type, title, conversation_id?, description?, complexity?, priority?, metadata?}` | create a task | 201, 200, 409 |
//! | `GET /api/orchestration/tasks/{id}` | a task | 200, 404 |
//! | `PATCH /api/orchestration/tasks/{id}` `{status}` | change its status | 200, 404 |
//! | `DELETE /api/orchestration/tasks/{id}` | delete a task | 204 (also when absent) |
//! | `GET /api/orchestration/users/{user_id}/tasks` | the tasks of a user's conversations | 200 |
//! | `GET /healthz` | liveness | 200 |
//!
//! Server-generated times come from [`crate::request_time`]. Errors are `{"error": "..."}`
//! (400 bad JSON or header, naming the field; 404; 409; 500 without row values).

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::request_time::request_time;
use crate::store::{self, Store, StoreError, TaskStatus};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest text field accepted (characters).
pub const MAX_TEXT_CHARS: usize = 10_000;

pub fn router(store: Store) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/chat/users", post(create_user))
        .route("/api/chat/users/{id}", get(get_user))
        .route("/api/conversations", post(create_conversation))
        .route(
            "/api/conversations/{id}",
            get(get_conversation).patch(rename_conversation),
        )
        .route("/api/conversations/{id}/messages", post(create_message))
        .route(
            "/api/conversations/{id}/messages/{message_id}",
            delete(delete_message),
        )
        .route("/api/orchestration/tasks", post(create_task))
        .route(
            "/api/orchestration/tasks/{id}",
            get(get_task).patch(set_task_status).delete(delete_task),
        )
        .route("/api/orchestration/users/{id}/tasks", get(user_tasks))
        .fallback(|| async { ApiError::NotFound("no such route".to_string()) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(store))
}

type AppState = State<Arc<Store>>;

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    NotFound(String),
    Conflict(String),
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::NotFound(m) => ApiError::NotFound(format!("{m} not found")),
            StoreError::Database(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<crate::request_time::InvalidRequestTime> for ApiError {
    fn from(error: crate::request_time::InvalidRequestTime) -> Self {
        ApiError::BadRequest(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::Internal(m) => {
                // The detail goes to the log only; sqlx's message carries no row values.
                eprintln!("cutover-app: 500: {m}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "database error".to_string(),
                )
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn created<T: Serialize>(result: store::Created<T>) -> Response {
    let status = if result.inserted {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(result.entity)).into_response()
}

fn found<T: Serialize>(entity: Option<T>, what: &str) -> ApiResult {
    entity
        .map(|e| Json(e).into_response())
        .ok_or_else(|| ApiError::NotFound(format!("{what} not found")))
}

/// A required text field: not blank, at most [`MAX_TEXT_CHARS`].
fn text<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::BadRequest(format!("field {field} is empty")));
    }
    optional_text(field, Some(value)).map(|v| v.unwrap_or(value))
}

fn optional_text<'a>(field: &str, value: Option<&'a str>) -> Result<Option<&'a str>, ApiError> {
    match value {
        Some(v) if v.chars().count() > MAX_TEXT_CHARS => Err(ApiError::BadRequest(format!(
            "field {field} is longer than {MAX_TEXT_CHARS} characters"
        ))),
        other => Ok(other),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    id: Uuid,
    username: String,
    email: String,
    password_hash: String,
}

async fn create_user(
    State(store): AppState,
    headers: HeaderMap,
    body: Result<Json<CreateUser>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body?;
    let (at, _) = request_time(&headers)?;
    let user = store::NewUser {
        id: body.id,
        username: text("username", &body.username)?,
        email: text("email", &body.email)?,
        password_hash: text("password_hash", &body.password_hash)?,
    };
    Ok(created(store.create_user(&user, at).await?))
}

async fn get_user(State(store): AppState, id: Result<Path<Uuid>, PathRejection>) -> ApiResult {
    let Path(id) = id?;
    found(store.user(id).await?, &format!("user {id}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateConversation {
    id: Uuid,
    user_id: Uuid,
    title: String,
    metadata: Option<serde_json::Value>,
}

async fn create_conversation(
    State(store): AppState,
    headers: HeaderMap,
    body: Result<Json<CreateConversation>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body?;
    let (at, _) = request_time(&headers)?;
    let conversation = store::NewConversation {
        id: body.id,
        user_id: body.user_id,
        title: text("title", &body.title)?,
        metadata: body.metadata.as_ref(),
    };
    Ok(created(store.create_conversation(&conversation, at).await?))
}

#[derive(Serialize)]
struct ConversationWithMessages {
    #[serde(flatten)]
    conversation: store::Conversation,
    messages: Vec<store::Message>,
}

async fn get_conversation(
    State(store): AppState,
    id: Result<Path<Uuid>, PathRejection>,
) -> ApiResult {
    let Path(id) = id?;
    let Some(conversation) = store.conversation(id).await? else {
        return Err(ApiError::NotFound(format!("conversation {id} not found")));
    };
    let messages = store.messages(id).await?;
    Ok(Json(ConversationWithMessages {
        conversation,
        messages,
    })
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    title: String,
}

async fn rename_conversation(
    State(store): AppState,
    headers: HeaderMap,
    id: Result<Path<Uuid>, PathRejection>,
    body: Result<Json<Rename>, JsonRejection>,
) -> ApiResult {
    let Path(id) = id?;
    let Json(body) = body?;
    let (at, _) = request_time(&headers)?;
    let title = text("title", &body.title)?;
    Ok(Json(store.rename_conversation(id, title, at).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateMessage {
    id: Uuid,
    content: String,
    sender: Option<String>,
    message_type: Option<String>,
    metadata: Option<serde_json::Value>,
}

async fn create_message(
    State(store): AppState,
    headers: HeaderMap,
    conversation_id: Result<Path<Uuid>, PathRejection>,
    body: Result<Json<CreateMessage>, JsonRejection>,
) -> ApiResult {
    let Path(conversation_id) = conversation_id?;
    let Json(body) = body?;
    let (at, _) = request_time(&headers)?;
    let message = store::NewMessage {
        id: body.id,
        conversation_id,
        sender: text("sender", body.sender.as_deref().unwrap_or("user"))?,
        content: text("content", &body.content)?,
        message_type: text(
            "message_type",
            body.message_type.as_deref().unwrap_or("text"),
        )?,
        metadata: body.metadata.as_ref(),
    };
    Ok(created(store.create_message(&message, at).await?))
}

async fn delete_message(
    State(store): AppState,
    ids: Result<Path<(Uuid, Uuid)>, PathRejection>,
) -> ApiResult {
    let Path((conversation_id, id)) = ids?;
    store.delete_message(conversation_id, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTask {
    id: Uuid,
    task_type: String,
    title: String,
    conversation_id: Option<Uuid>,
    description: Option<String>,
    complexity: Option<String>,
    priority: Option<i32>,
    metadata: Option<serde_json::Value>,
}

async fn create_task(
    State(store): AppState,
    headers: HeaderMap,
    body: Result<Json<CreateTask>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body?;
    let (at, _) = request_time(&headers)?;
    let task = store::NewTask {
        id: body.id,
        conversation_id: body.conversation_id,
        task_type: text("task_type", &body.task_type)?,
        complexity: optional_text("complexity", body.complexity.as_deref())?,
        title: text("title", &body.title)?,
        description: optional_text("description", body.description.as_deref())?,
        priority: body.priority.unwrap_or(0),
        metadata: body.metadata.as_ref(),
    };
    Ok(created(store.create_task(&task, at).await?))
}

async fn get_task(State(store): AppState, id: Result<Path<Uuid>, PathRejection>) -> ApiResult {
    let Path(id) = id?;
    found(store.task(id).await?, &format!("task {id}"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    status: TaskStatus,
}

async fn set_task_status(
    State(store): AppState,
    headers: HeaderMap,
    id: Result<Path<Uuid>, PathRejection>,
    body: Result<Json<StatusChange>, JsonRejection>,
) -> ApiResult {
    let Path(id) = id?;
    let Json(body) = body?;
    let (at, _) = request_time(&headers)?;
    Ok(Json(store.set_task_status(id, body.status, at).await?).into_response())
}

async fn delete_task(State(store): AppState, id: Result<Path<Uuid>, PathRejection>) -> ApiResult {
    let Path(id) = id?;
    store.delete_task(id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn user_tasks(State(store): AppState, id: Result<Path<Uuid>, PathRejection>) -> ApiResult {
    let Path(id) = id?;
    Ok(Json(store.user_tasks(id).await?).into_response())
}

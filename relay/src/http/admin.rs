//! Admin endpoints: list, disable and delete users. Only for accounts with
//! `is_admin`.

use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::Authed;
use crate::validate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use clipmesh_proto::api::ApiErrorCode;
use clipmesh_proto::api::UsersResponse;
use clipmesh_proto::UserId;
use std::sync::Arc;

type S = State<Arc<AppState>>;

fn require_admin(me: &crate::store::SessionInfo) -> Result<(), ApiError> {
    if me.is_admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ApiErrorCode::Forbidden,
            "this needs an admin account",
        ))
    }
}

fn target(me: &crate::store::SessionInfo, id: &str) -> Result<UserId, ApiError> {
    let user = UserId(validate::path_id(id)?);
    if user == me.user {
        return Err(ApiError::bad_request(
            "an admin cannot disable or delete their own account here",
        ));
    }
    Ok(user)
}

pub(super) async fn list_users(
    State(s): S,
    Authed(me): Authed,
) -> Result<Json<UsersResponse>, ApiError> {
    require_admin(&me)?;
    let users = s.store.call(|db| db.list_users()).await?;
    Ok(Json(UsersResponse { users }))
}

pub(super) async fn disable_user(
    State(s): S,
    Authed(me): Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&me)?;
    let user = target(&me, &id)?;
    if !s.store.call(move |db| db.set_disabled(user, true)).await? {
        return Err(ApiError::not_found("user"));
    }
    s.registry.revoke(user, None).await;
    tracing::info!(%user, by = %me.user, "user disabled");
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn delete_user(
    State(s): S,
    Authed(me): Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&me)?;
    let user = target(&me, &id)?;
    if !s.store.call(move |db| db.delete_user(user)).await? {
        return Err(ApiError::not_found("user"));
    }
    s.registry.remove(user).await;
    if let Err(e) = s.blobs.delete_user(user).await {
        // The sweeper removes the directory of a deleted user later.
        tracing::warn!(%user, error = %e, "deleting blob files failed");
    }
    tracing::info!(%user, by = %me.user, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

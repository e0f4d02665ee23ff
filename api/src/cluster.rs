//! `GET /v1/cluster`: the cluster as the answering node sees it — live nodes, their addresses,
//! leases and shard counts, and every shard's owner and epoch.

use crate::{AppState, auth::Caller, error::ApiError};
use actors::directory::Role;
use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;

/// The cluster as the answering node sees it.
#[derive(Serialize, ToSchema)]
pub(crate) struct ClusterDoc {
    /// Whether the node is part of a cluster (`false`: it runs alone and owns every shard).
    clustered: bool,
    /// The answering node's name (none when alone).
    node: Option<String>,
    /// Live nodes: `name`, `addr` (node-to-node), `lease_expires` and `started` (epoch ms),
    /// `shards` (how many it owns).
    #[schema(value_type = Vec<Object>)]
    nodes: Vec<actors::cluster::NodeView>,
    /// Every shard's `owner` (none while it moves) and `epoch`, by shard number.
    #[schema(value_type = Vec<Object>)]
    shards: Vec<actors::cluster::ShardRecord>,
}

/// The cluster's nodes and shard owners (admin).
#[utoipa::path(get, path = "/v1/cluster", tag = "operations", security(("bearer" = [])),
    responses((status = 200, body = ClusterDoc), (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ClusterDoc>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(match state.node.cluster() {
        Some(view) => ClusterDoc {
            clustered: true,
            node: Some(view.node),
            nodes: view.nodes,
            shards: view.shards,
        },
        None => ClusterDoc {
            clustered: false,
            node: None,
            nodes: Vec::new(),
            shards: Vec::new(),
        },
    }))
}

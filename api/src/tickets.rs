//! Tickets for WebSocket upgrades from browsers, which cannot set `Authorization` on one:
//! `POST /v1/ws/ticket` (with the key) answers a random ticket that opens one `/v1/ws?ticket=…`
//! within 30 seconds. A ticket is single-use and names no key, so a URL that leaks it (a log,
//! a proxy) gives nothing away once used or expired. Memory is bounded: each key holds at most
//! as many unused tickets as it may hold WebSocket connections.

use crate::{AppState, auth::Caller, error::ApiError};
use actors::directory::Principal;
use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use utoipa::ToSchema;

/// How long a ticket opens a connection.
pub(crate) const TICKET_TTL: Duration = Duration::from_secs(30);

/// Unused tickets: ticket → who it was issued to, and when it expires.
#[derive(Clone, Default)]
pub(crate) struct Tickets(Arc<Mutex<HashMap<String, (Principal, Instant)>>>);

impl Tickets {
    /// A new ticket for `principal`, unless it holds `max` unused ones already.
    fn issue(&self, principal: Principal, max: usize) -> Option<String> {
        let mut tickets = self.0.lock().ok()?;
        let now = Instant::now();
        tickets.retain(|_, (_, expires)| *expires > now);
        let held = tickets
            .values()
            .filter(|(p, _)| p.id == principal.id)
            .count();
        if held >= max {
            return None;
        }
        let ticket = actors::directory::new_token();
        tickets.insert(ticket.clone(), (principal, now + TICKET_TTL));
        Some(ticket)
    }

    /// Who `ticket` was issued to, if it is unused and unexpired; it is used up either way.
    pub(crate) fn redeem(&self, ticket: &str) -> Option<Principal> {
        let (principal, expires) = self.0.lock().ok()?.remove(ticket)?;
        (expires > Instant::now()).then_some(principal)
    }
}

/// A WebSocket ticket.
#[derive(Serialize, ToSchema)]
pub(crate) struct TicketView {
    /// Pass as `/v1/ws?ticket=…`; opens one connection.
    ticket: String,
    /// Seconds it stays valid.
    expires_in: u64,
}

/// Issues a single-use ticket that opens one WebSocket connection as the calling key within
/// 30 seconds (any valid key; for browsers).
#[utoipa::path(post, path = "/v1/ws/ticket", tag = "stream", security(("bearer" = [])),
    responses((status = 201, body = TicketView), (status = 401, body = crate::error::ErrorBody),
        (status = 429, body = crate::error::ErrorBody)))]
pub(crate) async fn issue(State(state): State<AppState>, caller: Caller) -> Response {
    let max = state.ws.max_connections_per_key;
    let Some(ticket) = state.tickets.issue(caller.0, max) else {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_tickets",
            format!("this key holds {max} unused WebSocket tickets already"),
        )
        .into_response();
    };
    let mut response = (
        StatusCode::CREATED,
        Json(TicketView {
            ticket,
            expires_in: TICKET_TTL.as_secs(),
        }),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::directory::Role;

    fn viewer(id: &str) -> Principal {
        Principal {
            id: id.into(),
            role: Role::Viewer,
            types: None,
        }
    }

    #[test]
    fn a_ticket_opens_once_and_a_key_holds_few() {
        let tickets = Tickets::default();
        let t = tickets.issue(viewer("a"), 2).unwrap();
        assert_eq!(tickets.redeem(&t).map(|p| p.id), Some("a".into()));
        assert!(tickets.redeem(&t).is_none(), "a ticket is single-use");
        assert!(tickets.redeem("made-up").is_none());
        let _ = tickets.issue(viewer("a"), 2).unwrap();
        let _ = tickets.issue(viewer("a"), 2).unwrap();
        assert!(tickets.issue(viewer("a"), 2).is_none(), "at most 2 unused");
        assert!(tickets.issue(viewer("b"), 2).is_some(), "per key");
    }
}

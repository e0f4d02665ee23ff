//! Helpers of the in-process node tests: an actix system to run in, registering things, and
//! shadow requests through `Node::call`.

#![allow(dead_code)]

use actors::{Node, directory::NewThing};
use serde_json::Value;
use std::{collections::BTreeMap, future::Future};
use twin_core::{Command, GetRequest, Reply, ShadowName, ThingName, request};

/// Runs `f` in an actix system.
pub fn run<F: Future<Output = ()>>(f: F) {
    actix_rt::System::new().block_on(f);
}

pub fn thing(name: &str) -> ThingName {
    ThingName::new(name).unwrap()
}

/// Registers `name` without type or attributes.
pub async fn register(node: &Node, name: &str) {
    node.register(
        NewThing {
            name: thing(name),
            device_type: None,
            attributes: BTreeMap::new(),
        },
        "test",
    )
    .await
    .unwrap();
}

/// An update of the classic shadow from an AWS update document.
pub fn update_command(node: &Node, body: Value) -> Command {
    let req = request::parse_update(
        ShadowName::CLASSIC,
        body.to_string().as_bytes(),
        &node.config().limits,
    )
    .unwrap();
    Command::Update(req)
}

/// Applies an update of the classic shadow; its reply.
pub async fn update(node: &Node, name: &str, body: Value) -> Reply {
    node.call(thing(name), update_command(node, body), None)
        .await
        .unwrap()
}

/// Reads the classic shadow; the reply.
pub async fn get(node: &Node, name: &str) -> Reply {
    node.call(
        thing(name),
        Command::Get(GetRequest {
            shadow: ShadowName::CLASSIC,
            client_token: None,
        }),
        None,
    )
    .await
    .unwrap()
}

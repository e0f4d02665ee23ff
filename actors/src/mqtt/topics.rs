//! The device API's MQTT topics: parsing what devices publish, building what they receive,
//! and the rule that a device publishes and subscribes only under its own thing name.
//!
//! - `$aws/things/{thing}/shadow[/name/{shadow}]/{get,update,delete}` and the replies
//!   `…/{op}/accepted`, `…/{op}/rejected`, `…/update/delta`, `…/update/documents`
//! - `things/{thing}/telemetry`
//! - `things/{thing}/commands/{name}` and the device's answer `…/commands/{name}/reply`
//! - `gateways/{gateway}/telemetry` (batches)
//! - `$aws/things/{thing}/jobs/{get,start-next}` and `…/jobs/{jobId}/{get,update}` (AWS IoT
//!   Jobs), answered on `…/accepted`, `…/rejected`; notices on `…/jobs/notify[-next]`
//! - `$aws/certificates/create/json` and `$aws/certificates/create-from-csr/json` (a device
//!   obtains a new certificate for itself: rotation), answered on `…/accepted`, `…/rejected`
//! - `$aws/provisioning-templates/{template}/provision/json` (fleet provisioning, only for a
//!   session authenticated by one of the template's claim certificates), answered likewise

use twin_core::{JobOp, Op, ShadowName, ThingName};

/// A topic a device may publish to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceTopic {
    /// A shadow request.
    Shadow {
        /// The thing.
        thing: ThingName,
        /// The shadow.
        shadow: ShadowName,
        /// `get`, `update` or `delete`.
        op: Op,
    },
    /// A telemetry sample.
    Telemetry {
        /// The thing.
        thing: ThingName,
    },
    /// A device's answer to a command.
    CommandReply {
        /// The thing.
        thing: ThingName,
        /// The command's name.
        name: String,
    },
    /// A gateway's telemetry batch.
    GatewayTelemetry {
        /// The gateway (itself a registered thing).
        gateway: ThingName,
    },
    /// A jobs request (AWS IoT Jobs).
    Jobs {
        /// The thing.
        thing: ThingName,
        /// What it asks.
        op: twin_core::JobOp,
    },
}

impl DeviceTopic {
    /// The thing whose credentials may publish here.
    pub fn owner(&self) -> &ThingName {
        match self {
            DeviceTopic::Shadow { thing, .. }
            | DeviceTopic::Telemetry { thing }
            | DeviceTopic::CommandReply { thing, .. }
            | DeviceTopic::Jobs { thing, .. } => thing,
            DeviceTopic::GatewayTelemetry { gateway } => gateway,
        }
    }
}

/// A device asking for a certificate of its own (AWS IoT's certificate-creation topics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateRequest {
    /// `$aws/certificates/create/json`: a key made by the node, returned once.
    Create,
    /// `$aws/certificates/create-from-csr/json`: from the device's CSR.
    FromCsr,
}

impl CertificateRequest {
    /// The request's topic, which its answers extend.
    pub fn topic(self) -> &'static str {
        match self {
            CertificateRequest::Create => "$aws/certificates/create/json",
            CertificateRequest::FromCsr => "$aws/certificates/create-from-csr/json",
        }
    }

    /// `…/accepted` or `…/rejected`.
    pub fn reply(self, accepted: bool) -> String {
        let outcome = if accepted { "accepted" } else { "rejected" };
        format!("{}/{outcome}", self.topic())
    }
}

/// Whether `topic` asks for a certificate.
pub fn certificate_request(topic: &str) -> Option<CertificateRequest> {
    match topic {
        "$aws/certificates/create/json" => Some(CertificateRequest::Create),
        "$aws/certificates/create-from-csr/json" => Some(CertificateRequest::FromCsr),
        _ => None,
    }
}

/// The template a publish to `$aws/provisioning-templates/{template}/provision/json` names.
pub fn provision_request(topic: &str) -> Option<&str> {
    topic
        .strip_prefix("$aws/provisioning-templates/")?
        .strip_suffix("/provision/json")
        .filter(|t| !t.is_empty() && !t.contains('/'))
}

/// `$aws/provisioning-templates/{template}/provision/json/accepted` or `…/rejected`.
pub fn provision_reply(template: &str, accepted: bool) -> String {
    let outcome = if accepted { "accepted" } else { "rejected" };
    format!("$aws/provisioning-templates/{template}/provision/json/{outcome}")
}

/// Whether a session holding a claim certificate of `template` may subscribe to `filter`: the
/// answers to certificate creation and to provisioning with that template, nothing else.
pub fn may_subscribe_claim(template: &str, filter: &str) -> bool {
    if !rumqttc::valid_filter(filter) {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let answer = |rest: &[&str]| matches!(rest, ["accepted" | "rejected" | "+" | "#"]);
    match levels.as_slice() {
        [
            "$aws",
            "certificates",
            "create" | "create-from-csr",
            "json",
            rest @ ..,
        ] => answer(rest),
        [
            "$aws",
            "provisioning-templates",
            t,
            "provision",
            "json",
            rest @ ..,
        ] => *t == template && answer(rest),
        _ => false,
    }
}

/// Parses a topic a device published to; `None` for anything outside the device API.
pub fn parse(topic: &str) -> Option<DeviceTopic> {
    let levels: Vec<&str> = topic.split('/').collect();
    let op = |s: &str| match s {
        "get" => Some(Op::Get),
        "update" => Some(Op::Update),
        "delete" => Some(Op::Delete),
        _ => None,
    };
    let thing = |s: &str| ThingName::new(s).ok();
    match levels.as_slice() {
        ["$aws", "things", t, "shadow", o] => Some(DeviceTopic::Shadow {
            thing: thing(t)?,
            shadow: ShadowName::CLASSIC,
            op: op(o)?,
        }),
        ["$aws", "things", t, "shadow", "name", s, o] => Some(DeviceTopic::Shadow {
            thing: thing(t)?,
            shadow: ShadowName::named(s).ok()?,
            op: op(o)?,
        }),
        ["things", t, "telemetry"] => Some(DeviceTopic::Telemetry { thing: thing(t)? }),
        ["things", t, "commands", name, "reply"] if !name.is_empty() => {
            Some(DeviceTopic::CommandReply {
                thing: thing(t)?,
                name: (*name).to_owned(),
            })
        }
        ["gateways", g, "telemetry"] => Some(DeviceTopic::GatewayTelemetry { gateway: thing(g)? }),
        ["$aws", "things", t, "jobs", "get"] => Some(DeviceTopic::Jobs {
            thing: thing(t)?,
            op: JobOp::GetPending,
        }),
        ["$aws", "things", t, "jobs", "start-next"] => Some(DeviceTopic::Jobs {
            thing: thing(t)?,
            op: JobOp::StartNext,
        }),
        ["$aws", "things", t, "jobs", id, "get"] if job_id(id) || *id == "$next" => {
            Some(DeviceTopic::Jobs {
                thing: thing(t)?,
                op: JobOp::Describe((*id).to_owned()),
            })
        }
        ["$aws", "things", t, "jobs", id, "update"] if job_id(id) => Some(DeviceTopic::Jobs {
            thing: thing(t)?,
            op: JobOp::Update((*id).to_owned()),
        }),
        _ => None,
    }
}

/// Whether `id` is a job id: 1 to 64 of `a-zA-Z0-9_-` (AWS's alphabet).
pub fn job_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// The answer topic of a jobs request: `…/jobs/get/accepted`, `…/jobs/{jobId}/update/rejected`…
pub fn jobs_reply(thing: &ThingName, op: &JobOp, accepted: bool) -> String {
    let outcome = if accepted { "accepted" } else { "rejected" };
    match op {
        JobOp::GetPending => format!("$aws/things/{thing}/jobs/get/{outcome}"),
        JobOp::StartNext => format!("$aws/things/{thing}/jobs/start-next/{outcome}"),
        JobOp::Describe(id) => format!("$aws/things/{thing}/jobs/{id}/get/{outcome}"),
        JobOp::Update(id) => format!("$aws/things/{thing}/jobs/{id}/update/{outcome}"),
    }
}

/// `$aws/things/{thing}/jobs/notify`, or `…/notify-next`.
pub fn jobs_notify(thing: &ThingName, next: bool) -> String {
    if next {
        format!("$aws/things/{thing}/jobs/notify-next")
    } else {
        format!("$aws/things/{thing}/jobs/notify")
    }
}

/// `$aws/things/{thing}/shadow` or `$aws/things/{thing}/shadow/name/{shadow}`.
pub fn shadow_prefix(thing: &ThingName, shadow: &ShadowName) -> String {
    match shadow.name() {
        None => format!("$aws/things/{thing}/shadow"),
        Some(name) => format!("$aws/things/{thing}/shadow/name/{name}"),
    }
}

/// `…/{op}/accepted` or `…/{op}/rejected`.
pub fn reply(thing: &ThingName, shadow: &ShadowName, op: Op, accepted: bool) -> String {
    let outcome = if accepted { "accepted" } else { "rejected" };
    format!("{}/{}/{outcome}", shadow_prefix(thing, shadow), op.as_str())
}

/// `…/update/delta`.
pub fn delta(thing: &ThingName, shadow: &ShadowName) -> String {
    format!("{}/update/delta", shadow_prefix(thing, shadow))
}

/// `…/update/documents`.
pub fn documents(thing: &ThingName, shadow: &ShadowName) -> String {
    format!("{}/update/documents", shadow_prefix(thing, shadow))
}

/// `things/{thing}/commands/{name}`.
pub fn command(thing: &ThingName, name: &str) -> String {
    format!("things/{thing}/commands/{name}")
}

/// Where a device learns that a telemetry sample was refused (and why).
pub fn telemetry_rejected(thing: &ThingName) -> String {
    format!("things/{thing}/telemetry/rejected")
}

/// Where a gateway learns which entries of its batches were refused.
pub fn gateway_rejected(gateway: &ThingName) -> String {
    format!("gateways/{gateway}/telemetry/rejected")
}

/// Whether `topic` matches the subscription `filter` (MQTT §4.7): `+` matches one level, a
/// final `#` any remaining levels (the parent included), and topics starting with `$` are not
/// matched by a filter starting with a wildcard. (rumqttc's `matches` refuses every `$` topic,
/// which is a broker's policy, not the protocol's: devices subscribe to `$aws/…` here.)
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match (part, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (part, Some(level)) if part == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

/// Whether the device `thing` may subscribe to `filter`: only under `$aws/things/{thing}/…`,
/// `things/{thing}/…` or (for gateways) `gateways/{thing}/…`, with no wildcard before the
/// thing's own name.
pub fn may_subscribe(thing: &ThingName, filter: &str) -> bool {
    if !rumqttc::valid_filter(filter) {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let own = |level: &str| level == thing.as_str();
    match levels.as_slice() {
        ["$aws", "things", t, "shadow" | "jobs", ..] => own(t),
        ["things", t, _, ..] => own(t),
        ["gateways", t, _, ..] => own(t),
        // The answers to its own certificate requests reach only the session that asked.
        [
            "$aws",
            "certificates",
            "create" | "create-from-csr",
            "json",
            rest @ ..,
        ] => {
            matches!(rest, ["accepted" | "rejected" | "+" | "#"])
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thing(s: &str) -> ThingName {
        ThingName::new(s).unwrap()
    }

    #[test]
    fn device_topics_parse() {
        assert_eq!(
            parse("$aws/things/pump-7/shadow/update"),
            Some(DeviceTopic::Shadow {
                thing: thing("pump-7"),
                shadow: ShadowName::CLASSIC,
                op: Op::Update
            })
        );
        assert_eq!(
            parse("$aws/things/pump-7/shadow/name/cfg/delete"),
            Some(DeviceTopic::Shadow {
                thing: thing("pump-7"),
                shadow: ShadowName::named("cfg").unwrap(),
                op: Op::Delete
            })
        );
        assert_eq!(
            parse("things/pump-7/telemetry"),
            Some(DeviceTopic::Telemetry {
                thing: thing("pump-7")
            })
        );
        assert_eq!(
            parse("things/pump-7/commands/reboot/reply"),
            Some(DeviceTopic::CommandReply {
                thing: thing("pump-7"),
                name: "reboot".into()
            })
        );
        assert_eq!(
            parse("gateways/gw-1/telemetry"),
            Some(DeviceTopic::GatewayTelemetry {
                gateway: thing("gw-1")
            })
        );
    }

    #[test]
    fn everything_else_is_outside_the_device_api() {
        for topic in [
            "$aws/things/pump-7/shadow/update/accepted",
            "$aws/things/pump-7/shadow/patch",
            "$aws/things/+/shadow/update",
            "$aws/things/pump-7/shadow/name//update",
            "things/pump-7/other",
            "things/a b/telemetry",
            "random",
            "",
        ] {
            assert_eq!(parse(topic), None, "{topic}");
        }
    }

    #[test]
    fn replies_are_built_for_classic_and_named_shadows() {
        let t = thing("pump-7");
        assert_eq!(
            reply(&t, &ShadowName::CLASSIC, Op::Get, true),
            "$aws/things/pump-7/shadow/get/accepted"
        );
        let named = ShadowName::named("cfg").unwrap();
        assert_eq!(
            reply(&t, &named, Op::Update, false),
            "$aws/things/pump-7/shadow/name/cfg/update/rejected"
        );
        assert_eq!(
            delta(&t, &named),
            "$aws/things/pump-7/shadow/name/cfg/update/delta"
        );
        assert_eq!(
            documents(&t, &ShadowName::CLASSIC),
            "$aws/things/pump-7/shadow/update/documents"
        );
        assert_eq!(command(&t, "reboot"), "things/pump-7/commands/reboot");
    }

    #[test]
    fn filters_match_by_the_mqtt_rules() {
        let table = [
            (
                "$aws/things/t/shadow/update/accepted",
                "$aws/things/t/shadow/update/accepted",
                true,
            ),
            (
                "$aws/things/t/shadow/update/accepted",
                "$aws/things/t/shadow/#",
                true,
            ),
            (
                "$aws/things/t/shadow/update/accepted",
                "$aws/things/t/shadow/+/accepted",
                true,
            ),
            (
                "$aws/things/t/shadow/update/accepted",
                "$aws/things/t/shadow/+",
                false,
            ),
            ("$aws/things/t/shadow", "$aws/things/t/shadow/#", true),
            ("$aws/things/t/shadow/update", "#", false),
            (
                "$aws/things/t/shadow/update",
                "+/things/t/shadow/update",
                false,
            ),
            ("things/t/commands/x", "things/t/commands/+", true),
            ("things/t/commands/x/y", "things/t/commands/+", false),
            ("things/t/commands", "things/t/commands/+", false),
            ("things/t", "things/t/x", false),
        ];
        for (topic, filter, expected) in table {
            assert_eq!(matches(topic, filter), expected, "{topic} ~ {filter}");
        }
    }

    #[test]
    fn devices_subscribe_only_under_their_own_name() {
        let t = thing("pump-7");
        for ok in [
            "$aws/things/pump-7/shadow/#",
            "$aws/things/pump-7/shadow/update/delta",
            "things/pump-7/commands/+",
            "$aws/things/pump-7/shadow/name/+/get/accepted",
            "$aws/things/pump-7/jobs/#",
            "$aws/things/pump-7/jobs/notify-next",
        ] {
            assert!(may_subscribe(&t, ok), "{ok}");
        }
        for bad in [
            "#",
            "$aws/#",
            "$aws/things/+/shadow/#",
            "$aws/things/pump-8/shadow/#",
            "things/+/telemetry",
            "things/pump-7",
            "things/pump-7x/commands/a",
            "other/pump-7/x",
            "$aws/things/pump-7/other/#",
            "$aws/things/pump-8/jobs/#",
            "$aws/things/+/jobs/notify",
            "things/pump-7/#/x",
        ] {
            assert!(!may_subscribe(&t, bad), "{bad}");
        }
    }

    #[test]
    fn jobs_topics_parse_and_answer_on_their_own_topics() {
        let jobs = |op| DeviceTopic::Jobs {
            thing: thing("m-1"),
            op,
        };
        assert_eq!(
            parse("$aws/things/m-1/jobs/get"),
            Some(jobs(JobOp::GetPending))
        );
        assert_eq!(
            parse("$aws/things/m-1/jobs/start-next"),
            Some(jobs(JobOp::StartNext))
        );
        assert_eq!(
            parse("$aws/things/m-1/jobs/$next/get"),
            Some(jobs(JobOp::Describe("$next".into())))
        );
        assert_eq!(
            parse("$aws/things/m-1/jobs/fw_2-0/update"),
            Some(jobs(JobOp::Update("fw_2-0".into())))
        );
        for bad in [
            "$aws/things/m-1/jobs/$next/update",
            "$aws/things/m-1/jobs/a b/get",
            "$aws/things/m-1/jobs//update",
            "$aws/things/m-1/jobs/x/delete",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let t = thing("m-1");
        assert_eq!(
            jobs_reply(&t, &JobOp::Update("j".into()), false),
            "$aws/things/m-1/jobs/j/update/rejected"
        );
        assert_eq!(jobs_notify(&t, true), "$aws/things/m-1/jobs/notify-next");
    }

    #[test]
    fn claim_sessions_reach_only_the_provisioning_topics() {
        assert_eq!(
            provision_request("$aws/provisioning-templates/factory/provision/json"),
            Some("factory")
        );
        assert_eq!(
            provision_request("$aws/provisioning-templates//provision/json"),
            None
        );
        assert_eq!(
            provision_request("$aws/provisioning-templates/a/b/provision/json"),
            None
        );
        assert!(may_subscribe_claim(
            "factory",
            "$aws/certificates/create/json/accepted"
        ));
        assert!(may_subscribe_claim(
            "factory",
            "$aws/provisioning-templates/factory/provision/json/+"
        ));
        assert!(!may_subscribe_claim(
            "factory",
            "$aws/provisioning-templates/other/provision/json/accepted"
        ));
        assert!(!may_subscribe_claim(
            "factory",
            "$aws/provisioning-templates/+/provision/json/accepted"
        ));
        assert!(!may_subscribe_claim(
            "factory",
            "$aws/things/x/shadow/update/accepted"
        ));
        assert!(!may_subscribe_claim("factory", "#"));
    }
}

//! MQTT 3.1.1 and 5 packets, read and written by rumqttc's `mqttbytes` codecs, seen by the
//! endpoint through one protocol-neutral vocabulary ([`In`], [`Out`]). Nothing here parses
//! bytes itself: it only maps the codec's packet types.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self as m4, v4};
use rumqttc::v5::mqttbytes::{self as m5, v5};

/// The protocol a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1.
    V4,
    /// MQTT 5.
    V5,
}

/// A CONNECT, in either version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// The protocol.
    pub version: Version,
    /// Client identifier.
    pub client_id: String,
    /// User name, if given.
    pub username: Option<String>,
    /// Password, if given.
    pub password: Option<String>,
    /// Keep-alive, seconds (0: none).
    pub keep_alive: u16,
}

/// A packet from a client after CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum In {
    /// PUBLISH.
    Publish {
        /// Topic name.
        topic: String,
        /// 0, 1 or 2.
        qos: u8,
        /// Packet id (QoS > 0).
        pkid: u16,
        /// Payload.
        payload: Bytes,
        /// Whether the client uses a topic alias (refused: the endpoint allows none).
        topic_alias: bool,
        /// The retain flag (refused: CONNACK says retain is not available).
        retain: bool,
    },
    /// PUBACK for a QoS 1 message the endpoint sent.
    PubAck {
        /// Packet id.
        pkid: u16,
    },
    /// SUBSCRIBE.
    Subscribe {
        /// Packet id.
        pkid: u16,
        /// Filters with their requested QoS.
        filters: Vec<(String, u8)>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet id.
        pkid: u16,
        /// Filters.
        filters: Vec<String>,
    },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT.
    Disconnect,
    /// Any other packet (a second CONNECT, QoS 2 flow packets, AUTH).
    Unexpected(&'static str),
}

/// Why a CONNECT is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown thing or wrong token.
    BadCredentials,
    /// Client id is not the thing name.
    BadClientId,
    /// The node cannot check credentials now.
    Unavailable,
    /// Too many failed attempts from this address lately.
    Throttled,
}

/// Reason codes the endpoint sends (MQTT 5 codes; MQTT 3.1.1 has no codes on these packets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// 0x00.
    Success,
    /// 0x87: outside the device's own topics.
    NotAuthorized,
    /// 0x99: the payload is not what the topic expects.
    PayloadInvalid,
    /// 0x82.
    ProtocolError,
    /// 0x8D.
    KeepAliveTimeout,
    /// 0x8E.
    SessionTakenOver,
    /// 0x95.
    PacketTooLarge,
    /// 0x9B.
    QoSNotSupported,
    /// 0x94.
    TopicAliasInvalid,
    /// 0x8B.
    ShuttingDown,
    /// 0x98: decommissioned.
    AdministrativeAction,
    /// 0x89: the node could not keep up (outbound queue full).
    ServerBusy,
    /// 0x97: the twin refused the message as too large or too many.
    QuotaExceeded,
    /// 0x9A: a retained PUBLISH (CONNACK said retain is not available).
    RetainNotSupported,
    /// 0x80.
    Unspecified,
}

impl Reason {
    /// The PUBACK reason for a message the twin refused with an AWS-style status `code`.
    pub fn for_refusal(code: u16) -> Reason {
        match code {
            400 | 415 => Reason::PayloadInvalid,
            401 | 403 => Reason::NotAuthorized,
            413 | 429 => Reason::QuotaExceeded,
            _ => Reason::Unspecified,
        }
    }
}

/// A packet to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// CONNACK: accepted, or refused.
    ConnAck(Result<(), Refusal>),
    /// PUBLISH.
    Publish {
        /// Topic.
        topic: String,
        /// 0 or 1.
        qos: u8,
        /// Packet id (QoS 1).
        pkid: u16,
        /// Payload.
        payload: Bytes,
    },
    /// PUBACK.
    PubAck {
        /// Packet id.
        pkid: u16,
        /// Outcome (MQTT 5 only).
        reason: Reason,
    },
    /// SUBACK: granted QoS per filter, or `None` for a refused filter.
    SubAck {
        /// Packet id.
        pkid: u16,
        /// Per filter.
        granted: Vec<Option<u8>>,
    },
    /// UNSUBACK.
    UnsubAck {
        /// Packet id.
        pkid: u16,
        /// Filters acknowledged.
        count: usize,
    },
    /// PINGRESP.
    PingResp,
    /// DISCONNECT with a reason (MQTT 5 only; 3.1.1 just closes).
    Disconnect(Reason),
}

/// A packet that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// Larger than the endpoint's maximum packet size.
    #[error("packet of {0} bytes is too large")]
    TooLarge(usize),
    /// Anything else the codec refused.
    #[error("malformed packet: {0}")]
    Malformed(String),
}

impl From<m4::Error> for PacketError {
    fn from(e: m4::Error) -> Self {
        match e {
            m4::Error::PayloadSizeLimitExceeded(n) => PacketError::TooLarge(n),
            e => PacketError::Malformed(e.to_string()),
        }
    }
}

impl From<m5::Error> for PacketError {
    fn from(e: m5::Error) -> Self {
        match e {
            m5::Error::PayloadSizeLimitExceeded { pkt_size, .. } => PacketError::TooLarge(pkt_size),
            e => PacketError::Malformed(e.to_string()),
        }
    }
}

/// Reads the CONNECT that opens a connection, whichever version it speaks. `Ok(None)`: more
/// bytes are needed.
pub fn read_connect(buf: &mut BytesMut, max: usize) -> Result<Option<Connect>, PacketError> {
    // The MQTT 5 reader checks the protocol level strictly; the 3.1.1 reader would also take a
    // level-5 CONNECT and misread its properties. So MQTT 5 is tried first, on a copy, because
    // the codec consumes a frame even when it refuses it.
    let mut copy = buf.clone();
    match v5::Packet::read(&mut copy, Some(max as u32)) {
        Ok(v5::Packet::Connect(c, _will, login)) => {
            *buf = copy;
            let (username, password) = login.map(|l| (l.username, l.password)).unzip();
            return Ok(Some(Connect {
                version: Version::V5,
                client_id: c.client_id,
                username,
                password,
                keep_alive: c.keep_alive,
            }));
        }
        Ok(_) => {
            return Err(PacketError::Malformed(
                "the first packet is not CONNECT".into(),
            ));
        }
        Err(m5::Error::InsufficientBytes(_)) => return Ok(None),
        Err(m5::Error::InvalidProtocolLevel(4)) => {}
        Err(e) => return Err(e.into()),
    }
    match v4::Packet::read(buf, max) {
        Ok(v4::Packet::Connect(c)) => {
            let (username, password) = c.login.map(|l| (l.username, l.password)).unzip();
            Ok(Some(Connect {
                version: Version::V4,
                client_id: c.client_id,
                username,
                password,
                keep_alive: c.keep_alive,
            }))
        }
        Ok(_) => Err(PacketError::Malformed(
            "the first packet is not CONNECT".into(),
        )),
        Err(m4::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Version {
    /// Reads the next packet; `Ok(None)`: more bytes are needed.
    pub fn read(self, buf: &mut BytesMut, max: usize) -> Result<Option<In>, PacketError> {
        match self {
            Version::V4 => match v4::Packet::read(buf, max) {
                Ok(p) => Ok(Some(from_v4(p))),
                Err(m4::Error::InsufficientBytes(_)) => Ok(None),
                Err(e) => Err(e.into()),
            },
            Version::V5 => {
                let first = buf.first().copied();
                match v5::Packet::read(buf, Some(max as u32)) {
                    Ok(p) => Ok(Some(from_v5(p))),
                    Err(m5::Error::InsufficientBytes(_)) => Ok(None),
                    // The codec refuses a DISCONNECT without a reason code, which MQTT 5 allows
                    // (it means "normal disconnection"); the frame is already consumed.
                    Err(m5::Error::PayloadRequired) if first.map(|b| b >> 4) == Some(14) => {
                        Ok(Some(In::Disconnect))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Appends `out` to `buf`. `settings` fill the MQTT 5 CONNACK properties.
    pub fn write(
        self,
        out: Out,
        buf: &mut BytesMut,
        settings: &Settings,
    ) -> Result<(), PacketError> {
        match self {
            Version::V4 => {
                if let Some(p) = to_v4(out) {
                    p.write(buf, usize::MAX)?;
                }
            }
            Version::V5 => {
                to_v5(out, settings).write(buf, None)?;
            }
        }
        Ok(())
    }
}

/// What the endpoint announces in an MQTT 5 CONNACK.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Largest packet the endpoint accepts.
    pub max_packet_size: u32,
    /// QoS 1 messages a client may have unacknowledged.
    pub receive_max: u16,
}

fn qos4(q: u8) -> m4::QoS {
    if q == 0 {
        m4::QoS::AtMostOnce
    } else {
        m4::QoS::AtLeastOnce
    }
}

fn qos5(q: u8) -> m5::QoS {
    if q == 0 {
        m5::QoS::AtMostOnce
    } else {
        m5::QoS::AtLeastOnce
    }
}

fn from_v4(p: v4::Packet) -> In {
    match p {
        v4::Packet::Publish(p) => In::Publish {
            topic: p.topic,
            qos: p.qos as u8,
            pkid: p.pkid,
            payload: p.payload,
            topic_alias: false,
            retain: p.retain,
        },
        v4::Packet::PubAck(a) => In::PubAck { pkid: a.pkid },
        v4::Packet::Subscribe(s) => In::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, f.qos as u8))
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => In::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => In::PingReq,
        v4::Packet::Disconnect => In::Disconnect,
        v4::Packet::Connect(_) => In::Unexpected("a second CONNECT"),
        _ => In::Unexpected("a packet of a QoS 2 or client-side flow"),
    }
}

fn from_v5(p: v5::Packet) -> In {
    match p {
        v5::Packet::Publish(p) => In::Publish {
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            qos: p.qos as u8,
            pkid: p.pkid,
            payload: p.payload,
            topic_alias: p
                .properties
                .as_ref()
                .is_some_and(|pr| pr.topic_alias.is_some()),
            retain: p.retain,
        },
        v5::Packet::PubAck(a) => In::PubAck { pkid: a.pkid },
        v5::Packet::Subscribe(s) => In::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, f.qos as u8))
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => In::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => In::PingReq,
        v5::Packet::Disconnect(_) => In::Disconnect,
        v5::Packet::Connect(..) => In::Unexpected("a second CONNECT"),
        _ => In::Unexpected("a packet of a QoS 2, AUTH or client-side flow"),
    }
}

fn to_v4(out: Out) -> Option<v4::Packet> {
    Some(match out {
        Out::ConnAck(result) => v4::Packet::ConnAck(v4::ConnAck {
            session_present: false,
            code: match result {
                Ok(()) => v4::ConnectReturnCode::Success,
                Err(Refusal::BadCredentials) => v4::ConnectReturnCode::BadUserNamePassword,
                Err(Refusal::BadClientId) => v4::ConnectReturnCode::BadClientId,
                Err(Refusal::Unavailable) => v4::ConnectReturnCode::ServiceUnavailable,
                Err(Refusal::Throttled) => v4::ConnectReturnCode::NotAuthorized,
            },
        }),
        Out::Publish {
            topic,
            qos,
            pkid,
            payload,
        } => {
            let mut p = v4::Publish::from_bytes(topic, qos4(qos), payload);
            p.pkid = pkid;
            v4::Packet::Publish(p)
        }
        Out::PubAck { pkid, .. } => v4::Packet::PubAck(v4::PubAck { pkid }),
        Out::SubAck { pkid, granted } => v4::Packet::SubAck(v4::SubAck {
            pkid,
            return_codes: granted
                .into_iter()
                .map(|g| match g {
                    Some(q) => v4::SubscribeReasonCode::Success(qos4(q)),
                    None => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        }),
        Out::UnsubAck { pkid, .. } => v4::Packet::UnsubAck(v4::UnsubAck { pkid }),
        Out::PingResp => v4::Packet::PingResp,
        // MQTT 3.1.1 servers close the connection without a packet.
        Out::Disconnect(_) => return None,
    })
}

fn reason5(r: Reason) -> v5::DisconnectReasonCode {
    use v5::DisconnectReasonCode as D;
    match r {
        Reason::Success => D::NormalDisconnection,
        Reason::NotAuthorized => D::NotAuthorized,
        Reason::PayloadInvalid => D::PayloadFormatInvalid,
        Reason::ProtocolError => D::ProtocolError,
        Reason::KeepAliveTimeout => D::KeepAliveTimeout,
        Reason::SessionTakenOver => D::SessionTakenOver,
        Reason::PacketTooLarge => D::PacketTooLarge,
        Reason::QoSNotSupported => D::QoSNotSupported,
        Reason::TopicAliasInvalid => D::TopicAliasInvalid,
        Reason::ShuttingDown => D::ServerShuttingDown,
        Reason::AdministrativeAction => D::AdministrativeAction,
        Reason::ServerBusy => D::ServerBusy,
        Reason::QuotaExceeded => D::QuotaExceeded,
        Reason::RetainNotSupported => D::RetainNotSupported,
        Reason::Unspecified => D::UnspecifiedError,
    }
}

fn to_v5(out: Out, settings: &Settings) -> v5::Packet {
    match out {
        Out::ConnAck(result) => v5::Packet::ConnAck(v5::ConnAck {
            session_present: false,
            code: match result {
                Ok(()) => v5::ConnectReturnCode::Success,
                Err(Refusal::BadCredentials) => v5::ConnectReturnCode::BadUserNamePassword,
                Err(Refusal::BadClientId) => v5::ConnectReturnCode::ClientIdentifierNotValid,
                Err(Refusal::Unavailable) => v5::ConnectReturnCode::ServerUnavailable,
                Err(Refusal::Throttled) => v5::ConnectReturnCode::ConnectionRateExceeded,
            },
            properties: result.is_ok().then(|| v5::ConnAckProperties {
                session_expiry_interval: Some(0),
                receive_max: Some(settings.receive_max),
                max_qos: Some(1),
                retain_available: Some(0),
                max_packet_size: Some(settings.max_packet_size),
                assigned_client_identifier: None,
                topic_alias_max: Some(0),
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: Some(1),
                subscription_identifiers_available: Some(0),
                shared_subscription_available: Some(0),
                server_keep_alive: None,
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            }),
        }),
        Out::Publish {
            topic,
            qos,
            pkid,
            payload,
        } => v5::Packet::Publish(v5::Publish {
            dup: false,
            qos: qos5(qos),
            retain: false,
            topic: Bytes::from(topic),
            pkid,
            payload,
            properties: None,
        }),
        Out::PubAck { pkid, reason } => v5::Packet::PubAck(v5::PubAck {
            pkid,
            reason: match reason {
                Reason::Success => v5::PubAckReason::Success,
                Reason::NotAuthorized => v5::PubAckReason::NotAuthorized,
                Reason::PayloadInvalid => v5::PubAckReason::PayloadFormatInvalid,
                Reason::QuotaExceeded => v5::PubAckReason::QuotaExceeded,
                _ => v5::PubAckReason::UnspecifiedError,
            },
            properties: None,
        }),
        Out::SubAck { pkid, granted } => v5::Packet::SubAck(v5::SubAck {
            pkid,
            return_codes: granted
                .into_iter()
                .map(|g| match g {
                    Some(q) => v5::SubscribeReasonCode::Success(qos5(q)),
                    None => v5::SubscribeReasonCode::NotAuthorized,
                })
                .collect(),
            properties: None,
        }),
        Out::UnsubAck { pkid, count } => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid,
            reasons: vec![v5::UnsubAckReason::Success; count],
            properties: None,
        }),
        Out::PingResp => v5::Packet::PingResp(v5::PingResp),
        // Always with a reason string: rumqttc 0.25 encodes a reason code without properties
        // (or with empty ones) wrongly — one byte short, or as a normal disconnection.
        Out::Disconnect(reason) => v5::Packet::Disconnect(v5::Disconnect {
            reason_code: reason5(reason),
            properties: Some(v5::DisconnectProperties {
                session_expiry_interval: None,
                reason_string: Some(format!("{reason:?}")),
                user_properties: Vec::new(),
                server_reference: None,
            }),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_connect(client_id: &str, login: Option<(&str, &str)>) -> BytesMut {
        let mut c = v4::Connect::new(client_id);
        if let Some((u, p)) = login {
            c.set_login(u, p);
        }
        let mut buf = BytesMut::new();
        v4::Packet::Connect(c).write(&mut buf, usize::MAX).unwrap();
        buf
    }

    #[test]
    fn connect_is_read_in_both_versions() {
        let mut buf = v4_connect("pump-7", Some(("pump-7", "secret")));
        let c = read_connect(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(
            (c.version, c.client_id.as_str(), c.password.as_deref()),
            (Version::V4, "pump-7", Some("secret"))
        );
        assert!(buf.is_empty(), "the frame is consumed");

        let mut buf = BytesMut::new();
        let login = v5::Login {
            username: "pump-7".into(),
            password: "pw".into(),
        };
        v5::Packet::Connect(
            v5::Connect {
                keep_alive: 30,
                client_id: "pump-7".into(),
                clean_start: true,
                properties: None,
            },
            None,
            Some(login),
        )
        .write(&mut buf, None)
        .unwrap();
        let c = read_connect(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(
            (c.version, c.keep_alive, c.username.as_deref()),
            (Version::V5, 30, Some("pump-7"))
        );
    }

    #[test]
    fn a_mosquitto_v5_connect_with_properties_is_read_as_v5() {
        // mosquitto_pub -V mqttv5 -i pump-11 -u pump-11 -P secret (receive maximum property).
        let bytes = hex::decode(
            "102800044d51545405c2003c03210014000770756d702d3131000770756d702d31310006736563726574",
        )
        .unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        let c = read_connect(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(c.version, Version::V5);
        assert_eq!(
            (
                c.client_id.as_str(),
                c.username.as_deref(),
                c.password.as_deref()
            ),
            ("pump-11", Some("pump-11"), Some("secret"))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_packets_wait_for_more_bytes() {
        let full = v4_connect("pump-7", None);
        let mut part = BytesMut::from(&full[..full.len() - 3]);
        assert_eq!(read_connect(&mut part, 1024).unwrap(), None);
        assert_eq!(part.len(), full.len() - 3, "nothing consumed");
    }

    #[test]
    fn oversized_and_malformed_packets_are_errors() {
        let mut buf = BytesMut::new();
        let p = v4::Publish::new("things/x/telemetry", m4::QoS::AtLeastOnce, vec![0u8; 2000]);
        v4::Packet::Publish(v4::Publish { pkid: 1, ..p })
            .write(&mut buf, usize::MAX)
            .unwrap();
        assert!(matches!(
            Version::V4.read(&mut buf, 1000),
            Err(PacketError::TooLarge(_))
        ));
        let mut junk = BytesMut::from(&[0xF0u8, 0x00][..]);
        assert!(matches!(
            read_connect(&mut junk, 1000),
            Err(PacketError::Malformed(_))
        ));
    }

    #[test]
    fn a_v5_disconnect_without_reason_is_read() {
        let mut buf = BytesMut::from(&[0xE0u8, 0x00][..]);
        assert_eq!(
            Version::V5.read(&mut buf, 100).unwrap(),
            Some(In::Disconnect)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn writes_map_to_each_version() {
        let settings = Settings {
            max_packet_size: 1024,
            receive_max: 10,
        };
        for version in [Version::V4, Version::V5] {
            let mut buf = BytesMut::new();
            version
                .write(
                    Out::SubAck {
                        pkid: 3,
                        granted: vec![Some(1), None],
                    },
                    &mut buf,
                    &settings,
                )
                .unwrap();
            version
                .write(
                    Out::PubAck {
                        pkid: 4,
                        reason: Reason::Success,
                    },
                    &mut buf,
                    &settings,
                )
                .unwrap();
            assert!(!buf.is_empty());
        }
        let mut buf = BytesMut::new();
        Version::V4
            .write(Out::Disconnect(Reason::NotAuthorized), &mut buf, &settings)
            .unwrap();
        assert!(buf.is_empty(), "3.1.1 servers send no DISCONNECT");
    }

    #[test]
    fn a_v5_disconnect_with_a_reason_is_one_whole_packet() {
        let settings = Settings {
            max_packet_size: 1024,
            receive_max: 16,
        };
        let mut buf = BytesMut::new();
        Version::V5
            .write(
                Out::Disconnect(Reason::RetainNotSupported),
                &mut buf,
                &settings,
            )
            .unwrap();
        let mut read = buf.clone();
        let packet = v5::Packet::read(&mut read, Some(1024)).unwrap();
        assert!(read.is_empty(), "no stray bytes after the packet");
        match packet {
            v5::Packet::Disconnect(d) => {
                assert_eq!(d.reason_code, v5::DisconnectReasonCode::RetainNotSupported);
            }
            other => panic!("{other:?}"),
        }
    }
}

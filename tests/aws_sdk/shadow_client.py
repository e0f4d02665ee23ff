#!/usr/bin/env python3
"""The AWS IoT Device SDK v2 for Python, unchanged, running its shadow client against a doppel
MQTT endpoint (or a broker in front of doppel) over plain TCP, or over TLS with the device's
certificate (the SDK's own `mtls_from_path` builder, as AWS IoT devices connect).

Usage: shadow_client.py HOST PORT THING TOKEN [--no-metrics] [--mtls CERT KEY CA]

The SDK appends a metrics query to the MQTT user name (`THING?SDK=Python…`). doppel's endpoint
ignores it, as AWS IoT does; a broker that looks user names up in a password file does not, so
through Mosquitto the script passes `--no-metrics` (the SDK's `disable_metrics`).

Gets, updates desired and reported, receives the delta, uses a named shadow and deletes, with
the SDK's own request and response types. Prints one JSON line of what it saw and exits 0, or
exits 1 with the reason.
"""

import json
import queue
import sys

from awscrt import io, mqtt
from awsiot import iotshadow

TIMEOUT = 10


def main():
    host, port, thing, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    options = sys.argv[5:]
    disable_metrics = "--no-metrics" in options
    if "--mtls" in options:
        from awsiot import mqtt_connection_builder
        cert, key, ca = options[options.index("--mtls") + 1:options.index("--mtls") + 4]
        connection = mqtt_connection_builder.mtls_from_path(
            endpoint=host,
            port=port,
            cert_filepath=cert,
            pri_key_filepath=key,
            ca_filepath=ca,
            client_id=thing,
            clean_session=True,
            keep_alive_secs=30,
        )
    else:
        elg = io.EventLoopGroup(1)
        bootstrap = io.ClientBootstrap(elg, io.DefaultHostResolver(elg))
        client = mqtt.Client(bootstrap, None)  # no TLS
        connection = mqtt.Connection(
            client=client,
            host_name=host,
            port=port,
            client_id=thing,
            clean_session=True,
            keep_alive_secs=30,
            username=thing,
            password=token,
            disable_metrics=disable_metrics,
        )
    connection.connect().result(TIMEOUT)
    shadow = iotshadow.IotShadowClient(connection)
    q = mqtt.QoS.AT_LEAST_ONCE
    inbox = {name: queue.Queue() for name in [
        "get_accepted", "get_rejected", "update_accepted", "update_rejected", "delta",
        "delete_accepted", "named_update_accepted", "named_get_accepted", "documents",
    ]}

    def into(name):
        return lambda response: inbox[name].put(response)

    subscriptions = [
        shadow.subscribe_to_get_shadow_accepted(iotshadow.GetShadowSubscriptionRequest(thing_name=thing), q, into("get_accepted")),
        shadow.subscribe_to_get_shadow_rejected(iotshadow.GetShadowSubscriptionRequest(thing_name=thing), q, into("get_rejected")),
        shadow.subscribe_to_update_shadow_accepted(iotshadow.UpdateShadowSubscriptionRequest(thing_name=thing), q, into("update_accepted")),
        shadow.subscribe_to_update_shadow_rejected(iotshadow.UpdateShadowSubscriptionRequest(thing_name=thing), q, into("update_rejected")),
        shadow.subscribe_to_shadow_delta_updated_events(iotshadow.ShadowDeltaUpdatedSubscriptionRequest(thing_name=thing), q, into("delta")),
        shadow.subscribe_to_shadow_updated_events(iotshadow.ShadowUpdatedSubscriptionRequest(thing_name=thing), q, into("documents")),
        shadow.subscribe_to_delete_shadow_accepted(iotshadow.DeleteShadowSubscriptionRequest(thing_name=thing), q, into("delete_accepted")),
        shadow.subscribe_to_update_named_shadow_accepted(
            iotshadow.UpdateNamedShadowSubscriptionRequest(thing_name=thing, shadow_name="config"), q, into("named_update_accepted")),
        shadow.subscribe_to_get_named_shadow_accepted(
            iotshadow.GetNamedShadowSubscriptionRequest(thing_name=thing, shadow_name="config"), q, into("named_get_accepted")),
    ]
    for future, _topic in subscriptions:
        future.result(TIMEOUT)

    def take(name):
        try:
            return inbox[name].get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"nothing arrived on {name}")

    seen = {}

    # A new shadow: get is rejected with 404.
    shadow.publish_get_shadow(iotshadow.GetShadowRequest(thing_name=thing, client_token="get-0"), q).result(TIMEOUT)
    error = take("get_rejected")
    assert error.code == 404 and error.client_token == "get-0", vars(error)
    seen["get_rejected"] = error.code

    # An app's wish: desired changes, the device hears the delta.
    shadow.publish_update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=thing, state=iotshadow.ShadowState(desired={"color": "red", "power": 3}), client_token="up-1"), q).result(TIMEOUT)
    accepted = take("update_accepted")
    assert accepted.version == 1 and accepted.client_token == "up-1", vars(accepted)
    delta = take("delta")
    assert delta.state == {"color": "red", "power": 3}, delta.state
    assert delta.version == 1, delta.version
    documents = take("documents")
    assert documents.current.state.desired == {"color": "red", "power": 3}, vars(documents.current.state)
    seen["delta"] = delta.state

    # The device reports what it did.
    shadow.publish_update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=thing, state=iotshadow.ShadowState(reported={"color": "red"}), client_token="up-2"), q).result(TIMEOUT)
    accepted = take("update_accepted")
    assert accepted.version == 2, vars(accepted)
    delta = take("delta")
    assert delta.state == {"power": 3}, delta.state

    shadow.publish_get_shadow(iotshadow.GetShadowRequest(thing_name=thing, client_token="get-1"), q).result(TIMEOUT)
    got = take("get_accepted")
    assert got.state.desired == {"color": "red", "power": 3}, vars(got.state)
    assert got.state.reported == {"color": "red"}, vars(got.state)
    assert got.state.delta == {"power": 3}, vars(got.state)
    assert got.version == 2 and got.client_token == "get-1", vars(got)
    seen["version"] = got.version

    # A version conflict is rejected.
    shadow.publish_update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=thing, state=iotshadow.ShadowState(reported={"power": 3}), version=1, client_token="up-3"), q).result(TIMEOUT)
    error = take("update_rejected")
    assert error.code == 409 and error.client_token == "up-3", vars(error)

    # A named shadow has its own document and version.
    shadow.publish_update_named_shadow(iotshadow.UpdateNamedShadowRequest(
        thing_name=thing, shadow_name="config", state=iotshadow.ShadowState(reported={"interval": 60})), q).result(TIMEOUT)
    assert take("named_update_accepted").version == 1
    shadow.publish_get_named_shadow(iotshadow.GetNamedShadowRequest(thing_name=thing, shadow_name="config"), q).result(TIMEOUT)
    assert take("named_get_accepted").state.reported == {"interval": 60}

    shadow.publish_delete_shadow(iotshadow.DeleteShadowRequest(thing_name=thing, client_token="del-1"), q).result(TIMEOUT)
    deleted = take("delete_accepted")
    assert deleted.version == 2 and deleted.client_token == "del-1", vars(deleted)
    seen["deleted_version"] = deleted.version

    connection.disconnect().result(TIMEOUT)
    print(json.dumps(seen))


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # report any failure as the script's answer
        print(f"shadow client failed: {error!r}", file=sys.stderr)
        sys.exit(1)

#!/usr/bin/env python3
"""The AWS IoT Device SDK v2 for Python, unchanged, provisioning a device with its identity
client (`awsiot.iotidentity`, AWS IoT Fleet Provisioning by claim) against a doppel endpoint.

Usage: identity_client.py HOST PORT CA CLAIM_CERT CLAIM_KEY TEMPLATE SERIAL OUT_DIR [--csr CSR KEY]

Connects over TLS with the claim certificate (client id `claim-SERIAL`), creates a certificate
(`CreateKeysAndCertificate`, or `CreateCertificateFromCsr` with `--csr`, the device's own key),
then calls `RegisterThing` with the template and `{"SerialNumber": SERIAL}`. When accepted, it
writes the certificate and key to OUT_DIR, connects again with them as the thing it was given
and reports a value through the SDK's shadow client. Prints one JSON line of what it saw and
exits 0 (a refusal of RegisterThing is printed too), or exits 1 with the reason.
"""

import json
import os
import queue
import sys

from awscrt import mqtt
from awsiot import iotidentity, iotshadow, mqtt_connection_builder

TIMEOUT = 10


def connect(host, port, cert, key, ca, client_id):
    connection = mqtt_connection_builder.mtls_from_path(
        endpoint=host,
        port=port,
        cert_filepath=cert,
        pri_key_filepath=key,
        ca_filepath=ca,
        client_id=client_id,
        clean_session=True,
        keep_alive_secs=30,
    )
    connection.connect().result(TIMEOUT)
    return connection


def take(inbox, name):
    try:
        return inbox[name].get(timeout=TIMEOUT)
    except queue.Empty:
        raise AssertionError(f"nothing arrived on {name}")


def main():
    host, port, ca, claim_cert, claim_key, template, serial, out = sys.argv[1:9]
    port = int(port)
    options = sys.argv[9:]
    q = mqtt.QoS.AT_LEAST_ONCE
    seen = {}

    connection = connect(host, port, claim_cert, claim_key, ca, f"claim-{serial}")
    identity = iotidentity.IotIdentityClient(connection)
    inbox = {name: queue.Queue() for name in ["created", "create_rejected", "registered", "register_rejected"]}

    def into(name):
        return lambda response: inbox[name].put(response)

    if "--csr" in options:
        csr_path, key_path = options[options.index("--csr") + 1:options.index("--csr") + 3]
        futures = [
            identity.subscribe_to_create_certificate_from_csr_accepted(
                iotidentity.CreateCertificateFromCsrSubscriptionRequest(), q, into("created")),
            identity.subscribe_to_create_certificate_from_csr_rejected(
                iotidentity.CreateCertificateFromCsrSubscriptionRequest(), q, into("create_rejected")),
        ]
    else:
        futures = [
            identity.subscribe_to_create_keys_and_certificate_accepted(
                iotidentity.CreateKeysAndCertificateSubscriptionRequest(), q, into("created")),
            identity.subscribe_to_create_keys_and_certificate_rejected(
                iotidentity.CreateKeysAndCertificateSubscriptionRequest(), q, into("create_rejected")),
        ]
    futures += [
        identity.subscribe_to_register_thing_accepted(
            iotidentity.RegisterThingSubscriptionRequest(template_name=template), q, into("registered")),
        identity.subscribe_to_register_thing_rejected(
            iotidentity.RegisterThingSubscriptionRequest(template_name=template), q, into("register_rejected")),
    ]
    for future, _topic in futures:
        future.result(TIMEOUT)

    if "--csr" in options:
        with open(csr_path) as f:
            csr = f.read()
        identity.publish_create_certificate_from_csr(
            iotidentity.CreateCertificateFromCsrRequest(certificate_signing_request=csr), q).result(TIMEOUT)
        created = take(inbox, "created")
        with open(key_path) as f:
            private_key = f.read()
    else:
        identity.publish_create_keys_and_certificate(
            iotidentity.CreateKeysAndCertificateRequest(), q).result(TIMEOUT)
        created = take(inbox, "created")
        private_key = created.private_key
    assert created.certificate_id and created.certificate_pem and created.certificate_ownership_token, vars(created)
    seen["certificate_id"] = created.certificate_id

    identity.publish_register_thing(iotidentity.RegisterThingRequest(
        template_name=template,
        certificate_ownership_token=created.certificate_ownership_token,
        parameters={"SerialNumber": serial}), q).result(TIMEOUT)
    # Whichever answer comes first.
    answer = None
    for _ in range(TIMEOUT * 10):
        for name in ["registered", "register_rejected"]:
            try:
                answer = (name, inbox[name].get(timeout=0.05))
            except queue.Empty:
                continue
            break
        if answer:
            break
    assert answer, "RegisterThing was not answered"
    connection.disconnect().result(TIMEOUT)
    if answer[0] == "register_rejected":
        error = answer[1]
        seen["rejected"] = {"status_code": error.status_code, "error_code": error.error_code,
                            "error_message": error.error_message}
        print(json.dumps(seen))
        return

    registered = answer[1]
    thing = registered.thing_name
    seen["thing_name"] = thing
    seen["device_configuration"] = registered.device_configuration

    # The device, now itself: its own certificate, its thing name as client id.
    cert_path, key_path = os.path.join(out, f"{thing}.pem"), os.path.join(out, f"{thing}.key")
    with open(cert_path, "w") as f:
        f.write(created.certificate_pem)
    with open(key_path, "w") as f:
        f.write(private_key)
    connection = connect(host, port, cert_path, key_path, ca, thing)
    shadow = iotshadow.IotShadowClient(connection)
    accepted = queue.Queue()
    future, _ = shadow.subscribe_to_update_shadow_accepted(
        iotshadow.UpdateShadowSubscriptionRequest(thing_name=thing), q, accepted.put)
    future.result(TIMEOUT)
    shadow.publish_update_shadow(iotshadow.UpdateShadowRequest(
        thing_name=thing, state=iotshadow.ShadowState(reported={"provisioned": True})), q).result(TIMEOUT)
    seen["shadow_version"] = accepted.get(timeout=TIMEOUT).version
    connection.disconnect().result(TIMEOUT)
    print(json.dumps(seen))


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # report any failure as the script's answer
        print(f"identity client failed: {error!r}", file=sys.stderr)
        sys.exit(1)

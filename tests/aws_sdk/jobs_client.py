#!/usr/bin/env python3
"""The AWS IoT Device SDK v2 for Python, unchanged, running a job with its jobs client
(`awsiot.iotjobs`) against a doppel MQTT endpoint: the device lists its pending executions,
starts the next one (getting the job document), reports progress, then success — with the
SDK's own request and response types — and hears `notify-next` as its next execution changes.

Usage: jobs_client.py HOST PORT THING TOKEN JOB_ID

Prints one JSON line of what it saw and exits 0, or exits 1 with the reason.
"""

import json
import queue
import sys

from awscrt import io, mqtt
from awsiot import iotjobs

TIMEOUT = 10


def main():
    host, port, thing, token, job_id = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    elg = io.EventLoopGroup(1)
    bootstrap = io.ClientBootstrap(elg, io.DefaultHostResolver(elg))
    client = mqtt.Client(bootstrap, None)
    connection = mqtt.Connection(
        client=client, host_name=host, port=port, client_id=thing, clean_session=True,
        keep_alive_secs=30, username=thing, password=token)
    connection.connect().result(TIMEOUT)
    jobs = iotjobs.IotJobsClient(connection)
    q = mqtt.QoS.AT_LEAST_ONCE
    inbox = {name: queue.Queue() for name in [
        "pending", "pending_rejected", "started", "start_rejected", "updated", "update_rejected", "next"]}

    def into(name):
        return lambda response: inbox[name].put(response)

    def take(name):
        try:
            return inbox[name].get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"nothing arrived on {name}")

    for future, _ in [
        jobs.subscribe_to_get_pending_job_executions_accepted(
            iotjobs.GetPendingJobExecutionsSubscriptionRequest(thing_name=thing), q, into("pending")),
        jobs.subscribe_to_get_pending_job_executions_rejected(
            iotjobs.GetPendingJobExecutionsSubscriptionRequest(thing_name=thing), q, into("pending_rejected")),
        jobs.subscribe_to_start_next_pending_job_execution_accepted(
            iotjobs.StartNextPendingJobExecutionSubscriptionRequest(thing_name=thing), q, into("started")),
        jobs.subscribe_to_start_next_pending_job_execution_rejected(
            iotjobs.StartNextPendingJobExecutionSubscriptionRequest(thing_name=thing), q, into("start_rejected")),
        jobs.subscribe_to_update_job_execution_accepted(
            iotjobs.UpdateJobExecutionSubscriptionRequest(thing_name=thing, job_id=job_id), q, into("updated")),
        jobs.subscribe_to_update_job_execution_rejected(
            iotjobs.UpdateJobExecutionSubscriptionRequest(thing_name=thing, job_id=job_id), q, into("update_rejected")),
        jobs.subscribe_to_next_job_execution_changed_events(
            iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=thing), q, into("next")),
    ]:
        future.result(TIMEOUT)

    seen = {}
    jobs.publish_get_pending_job_executions(
        iotjobs.GetPendingJobExecutionsRequest(thing_name=thing, client_token="list-1"), q).result(TIMEOUT)
    pending = take("pending")
    assert pending.client_token == "list-1", vars(pending)
    seen["queued"] = [j.job_id for j in pending.queued_jobs]

    jobs.publish_start_next_pending_job_execution(
        iotjobs.StartNextPendingJobExecutionRequest(thing_name=thing, status_details={"step": "download"}), q).result(TIMEOUT)
    started = take("started")
    execution = started.execution
    seen["started"] = {"job_id": execution.job_id, "status": execution.status,
                       "document": execution.job_document, "version": execution.version_number}
    # Its next execution is now in progress: notify-next says so.
    changed = take("next")
    seen["next_after_start"] = changed.execution.status if changed.execution else None

    # A stale version is refused with the execution's state.
    jobs.publish_update_job_execution(iotjobs.UpdateJobExecutionRequest(
        thing_name=thing, job_id=job_id, status="IN_PROGRESS", expected_version=1), q).result(TIMEOUT)
    refused = take("update_rejected")
    seen["stale"] = {"code": refused.code, "version": refused.execution_state.version_number}

    jobs.publish_update_job_execution(iotjobs.UpdateJobExecutionRequest(
        thing_name=thing, job_id=job_id, status="IN_PROGRESS", status_details={"step": "flash"},
        expected_version=execution.version_number, include_job_execution_state=True), q).result(TIMEOUT)
    progress = take("updated")
    seen["progress"] = {"status": progress.execution_state.status,
                        "details": progress.execution_state.status_details}

    jobs.publish_update_job_execution(iotjobs.UpdateJobExecutionRequest(
        thing_name=thing, job_id=job_id, status="SUCCEEDED", status_details={"version": "2.0"}), q).result(TIMEOUT)
    take("updated")
    # Nothing pending any more: notify-next carries no execution.
    finished = take("next")
    seen["next_after_success"] = finished.execution.status if finished.execution else None

    connection.disconnect().result(TIMEOUT)
    print(json.dumps(seen))


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # report any failure as the script's answer
        print(f"jobs client failed: {error!r}", file=sys.stderr)
        sys.exit(1)

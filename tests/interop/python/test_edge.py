"""A downstream device through the ferrohub edge gateway (seeds 000/001): the Python SDK with
GatewayHostName connects to the gateway, and its telemetry reaches the hub as its own."""

import subprocess
import time

import pytest
from azure.iot.device import IoTHubDeviceClient, Message

from conftest import BIN, run, wait_port
from test_hub import REFUSED, registry, unique

GATEWAY = "127.0.0.4"


@pytest.fixture()
def gateway(hub, tmp_path):
    """An edge device at the hub, a child of it, and `ferrohub edge` on 127.0.0.4:8883 with a
    server certificate from an edge CA under the hub's root."""
    certs = hub.dir / "certs"
    if not (certs / "iot-edge-device-ca-py-edge.cert.pem").exists():
        run("certs", "edge-ca", "py-edge", "--dir", str(certs))
    edge_id = unique("py-gw")
    run("edge", "init", "--dir", str(tmp_path / "edge"), "--edge-id", edge_id, "--hostname", GATEWAY,
        "--listen", f"{GATEWAY}:8883", "--config", str(hub.config), "--ca-dir", str(certs), "--edge-ca", "py-edge")
    child = unique("py-child")
    d = hub.cli("hub", "device", "create", child, "--parent", edge_id, "--json").stdout
    import json
    key = json.loads(d)["authentication"]["symmetricKey"]["primaryKey"]
    gw = GatewayProcess(tmp_path / "edge" / "edge.toml", tmp_path / "edge.log")
    gw.start()
    yield edge_id, child, key, gw
    gw.stop()


class GatewayProcess:
    """`ferrohub edge --config FILE` as a child process that a test can kill -9 and restart."""

    def __init__(self, config, log):
        self.config, self.log, self.proc = config, log, None

    def start(self):
        log = open(self.log, "a")
        self.proc = subprocess.Popen([str(BIN), "edge", "--config", str(self.config)], stdout=log, stderr=log)
        wait_port(8883, host=GATEWAY)

    def kill_9(self):
        self.proc.kill()  # SIGKILL: no shutdown, no flush
        self.proc.wait(timeout=20)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def connected(hub, child, key):
    cs = f"HostName=localhost;DeviceId={child};SharedAccessKey={key};GatewayHostName={GATEWAY}"
    client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=hub.root_pem())
    deadline = time.monotonic() + 30
    while True:  # the gateway syncs its device scope from the hub at start
        try:
            client.connect()
            return client
        except REFUSED:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def seqs_at_hub(hub, child, prefix, n, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        events = [e for e in hub.events(child) if e["body"].startswith(prefix)]
        if len({e["properties"]["seq"] for e in events}) >= n or time.monotonic() > deadline:
            return events
        time.sleep(0.3)


def test_a_downstream_device_sends_through_the_gateway(hub, gateway):
    edge_id, child, key, _ = gateway
    client = connected(hub, child, key)
    for i in range(10):
        m = Message(f"via-gateway-{i}")
        m.custom_properties["seq"] = str(i)
        client.send_message(m)
    client.shutdown()
    deadline = time.monotonic() + 30
    while True:
        events = [e for e in hub.events(child) if e["body"].startswith("via-gateway-")]
        if len(events) >= 10 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert [e["properties"]["seq"] for e in events] == [str(i) for i in range(10)]
    assert all(e["systemProperties"]["iothub-connection-device-id"] == child for e in events)
    # A device that is not this gateway's child is refused by the gateway.
    stranger = unique("py-stranger")
    d = registry(hub).create_device_with_sas(stranger, "", "", "enabled")
    cs = f"HostName=localhost;DeviceId={stranger};SharedAccessKey={d.authentication.symmetric_key.primary_key};GatewayHostName={GATEWAY}"
    other = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=hub.root_pem(), connection_retry=False)
    with pytest.raises(REFUSED):
        other.connect()
    other.shutdown()


def test_acknowledged_messages_survive_a_hub_outage_and_kill_9_of_the_gateway(hub, gateway):
    """The hub goes away; the gateway acknowledges 50 messages (durably); the gateway is killed
    with SIGKILL before it could forward them; hub and gateway come back: all 50 arrive."""
    edge_id, child, key, gw = gateway
    client = connected(hub, child, key)
    hub.stop()
    try:
        for i in range(50):
            m = Message(f"outage-{i}")
            m.custom_properties["seq"] = str(i)
            client.send_message(m)  # returns once the gateway's PUBACK came (after its fsync)
        client.shutdown()
        gw.kill_9()
    finally:
        hub.start()
    gw.start()
    events = seqs_at_hub(hub, child, "outage-", 50)
    assert sorted({int(e["properties"]["seq"]) for e in events}) == list(range(50)), "no acknowledged message lost"
    assert all(e["systemProperties"]["iothub-connection-device-id"] == child for e in events)

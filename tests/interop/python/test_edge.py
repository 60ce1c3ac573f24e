"""A downstream device through the ferrohub edge gateway (seeds 000/001): the Python SDK with
GatewayHostName connects to the gateway, and its telemetry reaches the hub as its own."""

import queue
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


def test_the_service_reaches_a_child_through_the_gateway(hub, gateway):
    """The service SDK invokes a direct method on a child and patches its twin; both reach the
    child through the gateway (seed 000: the gateway relays for its children)."""
    from azure.iot.device import MethodResponse
    from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties

    edge_id, child, key, _ = gateway
    client = connected(hub, child, key)
    patches = queue.Queue()
    client.on_twin_desired_properties_patch_received = patches.put

    def handler(req):
        client.send_method_response(MethodResponse.create_from_method_request(req, 200, {"echo": req.payload}))

    client.on_method_request_received = handler
    rm = registry(hub)
    method = CloudToDeviceMethod(method_name="blink", payload={"n": 3}, response_timeout_in_seconds=10,
                                 connect_timeout_in_seconds=10)
    result = rm.invoke_device_method(child, method)
    assert result.status == 200 and result.payload == {"echo": {"n": 3}}
    rm.update_twin(child, Twin(properties=TwinProperties(desired={"mode": "eco"})), "*")
    assert patches.get(timeout=20)["mode"] == "eco"
    client.patch_twin_reported_properties({"temp": 21})
    assert rm.get_twin(child).properties.reported["temp"] == 21
    assert client.get_twin()["desired"]["mode"] == "eco"
    client.shutdown()


def test_edge_modules_route_an_output_to_an_input_and_children_upstream(hub, gateway, monkeypatch):
    """Modules of the edge device connect to the gateway with the SDK's EdgeHubConnectionString
    fallback; the $edgeHub twin's routes send module a's output o1 to module b's input i1 and the
    child's telemetry (no $connectionModuleId) upstream."""
    from azure.iot.device import IoTHubModuleClient
    from azure.iot.hub.models import Twin, TwinProperties

    edge_id, child, key, _ = gateway
    rm = registry(hub)
    keys = {m: rm.create_module_with_sas(edge_id, m, "", "", "").authentication.symmetric_key.primary_key
            for m in ("a", "b")}
    routes = {
        "aToB": 'FROM /messages/modules/a/outputs/o1 INTO BrokeredEndpoint("/modules/b/inputs/i1")',
        "up": "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream",
    }
    rm.update_module_twin(edge_id, "$edgeHub", Twin(properties=TwinProperties(
        desired={"schemaVersion": "1.1", "routes": routes})), "*")
    ca_file = hub.dir / "root-ca.pem"
    ca_file.write_text(hub.root_pem())
    clients = {}
    for m in ("a", "b"):
        monkeypatch.setenv("EdgeHubConnectionString",
                           f"HostName=localhost;GatewayHostName={GATEWAY};DeviceId={edge_id};ModuleId={m};SharedAccessKey={keys[m]}")
        monkeypatch.setenv("EdgeModuleCACertificateFile", str(ca_file))
        clients[m] = IoTHubModuleClient.create_from_edge_environment(connection_retry_interval=1)
    inputs = queue.Queue()
    clients["b"].on_message_received = inputs.put
    deadline = time.monotonic() + 30
    for m in ("a", "b"):
        while True:  # the gateway learns new modules at its next scope sync
            try:
                clients[m].connect()
                break
            except REFUSED:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    msg = Message("from-a")
    msg.custom_properties["k"] = "v"
    deadline = time.monotonic() + 30
    got = None
    while got is None:  # the routes arrive with the gateway's $edgeHub twin read
        clients["a"].send_message_to_output(msg, "o1")
        try:
            got = inputs.get(timeout=2)
        except queue.Empty:
            assert time.monotonic() < deadline, "module b never received module a's output"
    assert got.input_name == "i1"
    assert got.data == b"from-a" and got.custom_properties["k"] == "v"
    child_client = connected(hub, child, key)
    child_client.send_message(Message("child-up"))
    child_client.shutdown()
    deadline = time.monotonic() + 30
    while not [e for e in hub.events(child) if e["body"] == "child-up"]:
        assert time.monotonic() < deadline, "child telemetry did not reach the hub"
        time.sleep(0.3)
    assert not [e for e in hub.events(edge_id) if e["body"] == "from-a"], "module a's output is not routed upstream"
    for c in clients.values():
        c.shutdown()

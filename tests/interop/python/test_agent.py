"""The edge agent (issue 12) with the real Python SDK: deployments set at the hub with
`ferrohub hub edge set-modules` start the gateway (seed 000's "Deploy edgeHub to the gateway")
and seed 000's `ai_insights` module, a Python program using
`IoTHubModuleClient.create_from_edge_environment()` unmodified; a downstream device's telemetry
reaches the hub through it. The agent and its gateway run on 127.0.0.5 (port 8883)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from azure.iot.device import IoTHubDeviceClient, Message

from conftest import BIN, run, wait_port
from test_hub import REFUSED, registry, unique

GATEWAY = "127.0.0.5"


def edge_cmd():
    """`ferrohub edge …` once the agent's commands are wired there, else the interim
    `ferrohub edge-agent …`."""
    wired = subprocess.run([str(BIN), "edge", "list", "--help"], capture_output=True).returncode == 0
    return ["edge"] if wired else ["edge-agent"]


EDGE = edge_cmd()

AI_INSIGHTS = r'''
"""Seed 000's ai_insights: reads input1, tags the message, sends it on output1."""
import os, sys, time
from azure.iot.device import IoTHubModuleClient, Message

open("pid", "w").write(str(os.getpid()))
print("credentials:", "workload " + os.environ["IOTEDGE_WORKLOADURI"] if "IOTEDGE_WORKLOADURI" in os.environ
      else "connection string" if "EdgeHubConnectionString" in os.environ else "none", flush=True)
client = IoTHubModuleClient.create_from_edge_environment(connection_retry_interval=1)

def on_message(msg):
    if msg.input_name != "input1":
        return
    out = Message(msg.data)
    out.custom_properties.update(msg.custom_properties)
    out.custom_properties["ai_insights"] = "tagged"
    client.send_message_to_output(out, "output1")
    print("tagged", msg.custom_properties.get("seq"), flush=True)

client.on_message_received = on_message
deadline = time.monotonic() + 60
while True:  # the gateway starts with the deployment, and learns the new module on connect
    try:
        client.connect()
        break
    except Exception as e:
        if time.monotonic() > deadline:
            raise
        print("connect failed, retrying:", type(e).__name__, flush=True)
        time.sleep(1)
print("ai_insights connected", flush=True)
while True:
    time.sleep(1)
'''

ROUTES = {
    "sensorToAIInsightsInput1": 'FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO BrokeredEndpoint("/modules/ai_insights/inputs/input1")',
    "AIInsightsToIoTHub": "FROM /messages/modules/ai_insights/outputs/output1 INTO $upstream",
}


def deployment(modules, routes):
    return {"modulesContent": {
        "$edgeAgent": {"properties.desired": {
            "schemaVersion": "1.1",
            "runtime": {"type": "docker", "settings": {}},
            "systemModules": {
                "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
                "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                            "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"}},
            },
            "modules": modules,
        }},
        "$edgeHub": {"properties.desired": {
            "schemaVersion": "1.1", "routes": routes,
            "storeAndForwardConfiguration": {"timeToLiveSecs": 7200},
        }},
    }}


class AgentEdge:
    """An edge device at the hub with a child, `ferrohub edge init` for a gateway on
    127.0.0.5:8883, `edge agent init`, and the agent running (it runs the gateway once a
    deployment names edgeHub)."""

    def __init__(self, hub, base: Path, credentials="workload"):
        self.hub = hub
        self.dir = base
        certs = hub.dir / "certs"
        if not (certs / "iot-edge-device-ca-py-agent.cert.pem").exists():
            run("certs", "edge-ca", "py-agent", "--dir", str(certs))
        self.edge_id = unique("py-agent-gw")
        run("edge", "init", "--dir", str(self.dir / "edge"), "--edge-id", self.edge_id, "--hostname", GATEWAY,
            "--listen", f"{GATEWAY}:8883", "--config", str(hub.config), "--ca-dir", str(certs), "--edge-ca", "py-agent")
        self.config = self.dir / "edge" / "agent.toml"
        run(*EDGE, "agent", "init", "--edge-config", str(self.dir / "edge" / "edge.toml"), "--config", str(hub.config),
            "--credentials", credentials)
        self.child = unique("py-agent-child")
        d = json.loads(hub.cli("hub", "device", "create", self.child, "--parent", self.edge_id, "--json").stdout)
        self.child_key = d["authentication"]["symmetricKey"]["primaryKey"]
        self.log = self.dir / "agent.log"
        env = dict(os.environ, FERROHUB_LOG="info")
        self.proc = subprocess.Popen([str(BIN), *EDGE, "agent", "--config", str(self.config)],
                                     stdout=open(self.log, "a"), stderr=subprocess.STDOUT, env=env)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)

    def cli(self, *args, check=True):
        return run(*EDGE, *args, "--config", str(self.config), check=check)

    def set_modules(self, manifest, check=True):
        path = self.dir / f"deployment-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(manifest))
        return self.hub.cli("hub", "edge", "set-modules", self.edge_id, "--content", str(path), check=check)

    def listed(self):
        """`edge list` as {name: (status, description)}."""
        out = self.cli("list").stdout.splitlines()
        assert out[0].split() == ["NAME", "STATUS", "DESCRIPTION", "CONFIG"], out
        rows = {}
        for line in out[1:]:
            name, status, rest = line.split(None, 2)
            rows[name] = (status, rest)
        return rows

    def reported(self):
        return registry(self.hub).get_module_twin(self.edge_id, "$edgeAgent").properties.reported

    def wait_for(self, check, what, timeout=60):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the agent exited:\n{self.log.read_text()}"
            try:
                last = check()
                if last:
                    return last
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                last = e
            time.sleep(0.3)
        raise AssertionError(f"{what} never happened (last: {last!r})\nagent log:\n{self.log.read_text()[-4000:]}")

    def child_client(self):
        cs = f"HostName=localhost;DeviceId={self.child};SharedAccessKey={self.child_key};GatewayHostName={GATEWAY}"
        client = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=self.hub.root_pem())
        self.wait_for(lambda: connect(client), "the child connecting through the gateway")
        return client


def connect(client):
    try:
        client.connect()
        return True
    except REFUSED:
        return False


@pytest.fixture()
def edge(hub, tmp_path):
    e = AgentEdge(hub, tmp_path)
    yield e
    e.stop()


def test_an_empty_deployment_starts_the_gateway_with_the_default_route(hub, edge):
    """Seed 000, "Deploy edgeHub to the gateway": before a deployment only the agent runs; the
    empty deployment starts edgeHub, `edge list` shows both running, and the default route
    takes a downstream device's telemetry to the hub."""
    listed = edge.wait_for(edge.listed, "the agent answering")
    assert list(listed) == ["edgeAgent"] and listed["edgeAgent"][0] == "running"
    out = edge.set_modules({}).stdout
    assert "0 module(s)" in out and "routes: route" in out, out
    listed = edge.wait_for(lambda: (l := edge.listed()).get("edgeHub", ("",))[0] == "running" and l,
                           "edgeHub running")
    assert listed["edgeAgent"][0] == "running"
    wait_port(8883, host=GATEWAY)
    reported = edge.wait_for(lambda: (r := edge.reported()).get("lastDesiredStatus", {}).get("code") == 200 and r,
                             "the deployment reported as applied")
    assert reported["systemModules"]["edgeHub"]["runtimeStatus"] == "running"
    client = edge.child_client()
    client.send_message(Message("through-the-default-route"))
    client.shutdown()
    edge.wait_for(lambda: [e for e in hub.events(edge.child) if e["body"] == "through-the-default-route"],
                  "the child's message at the hub")
    status = edge.cli("agent", "status").stdout
    assert "deployment:" in status and "— 200" in status, status
    logs = edge.cli("logs", "edgeAgent").stdout
    assert "Applying deployment version" in logs and "Started module edgeHub" in logs, logs


@pytest.mark.parametrize("credentials", ["workload", "connection-string"])
def test_seed_000_ai_insights_end_to_end_restart_and_removal(hub, tmp_path, credentials):
    """Seed 000's two routes and ai_insights, whose create_from_edge_environment() finds either
    IOTEDGE_* and a workload socket or EdgeHubConnectionString: the child's telemetry reaches
    the hub tagged by the module. Killed, the module is restarted and the restart reported;
    removed, it stops and its identity goes."""
    edge = AgentEdge(hub, tmp_path, credentials)
    try:
        ai_insights_end_to_end(hub, edge, credentials)
    finally:
        edge.stop()


def ai_insights_end_to_end(hub, edge, credentials):
    script = edge.dir / "ai_insights.py"
    script.write_text(AI_INSIGHTS)
    module = {"type": "process", "status": "running", "restartPolicy": "always", "version": "1.0",
              "settings": {"command": sys.executable, "args": [str(script)]},
              "env": {"PYTHONUNBUFFERED": {"value": "1"}}}
    out = edge.set_modules(deployment({"ai_insights": module}, ROUTES)).stdout
    assert "1 module(s) ai_insights" in out, out
    module_dir = edge.config.parent / "agent" / "modules" / "ai_insights"
    edge.wait_for(lambda: "ai_insights connected" in edge.cli("logs", "ai_insights").stdout,
                  "ai_insights connected to the gateway")
    assert edge.listed()["ai_insights"][0] == "running"
    pid = int((module_dir / "pid").read_text())
    expected = {"workload": "credentials: workload unix://", "connection-string": "credentials: connection string"}
    assert expected[credentials] in edge.cli("logs", "ai_insights").stdout

    def tagged(seqs):
        events = [e for e in hub.events(edge.edge_id) if e.get("moduleId") == "ai_insights"
                  and e["properties"].get("seq") in seqs]
        return events if len({e["properties"]["seq"] for e in events}) == len(seqs) else None

    client = edge.child_client()
    for i in range(3):
        m = Message(f"sensor-{i}")
        m.custom_properties["seq"] = str(i)
        client.send_message(m)
    events = edge.wait_for(lambda: tagged({"0", "1", "2"}), "the child's telemetry at the hub through ai_insights")
    assert all(e["properties"]["ai_insights"] == "tagged" for e in events)
    assert sorted(e["body"] for e in events)[0] == "sensor-0"
    assert not [e for e in hub.events(edge.child) if e["body"].startswith("sensor-")], \
        "the child's messages go to the module, not straight upstream"

    # Killed: restarted by the agent, the restart reported in $edgeAgent.
    os.kill(pid, signal.SIGKILL)
    reported = edge.wait_for(
        lambda: (r := edge.reported()["modules"]["ai_insights"])["restartCount"] >= 1
        and r["runtimeStatus"] == "running" and r, "the restart reported")
    assert reported["exitCode"] == 137
    edge.wait_for(lambda: int((module_dir / "pid").read_text()) != pid, "a new ai_insights process")
    edge.wait_for(lambda: edge.cli("logs", "ai_insights").stdout.count("ai_insights connected") >= 2,
                  "the restarted module connected")
    m = Message("sensor-after-restart")
    m.custom_properties["seq"] = "3"
    client.send_message(m)
    edge.wait_for(lambda: tagged({"3"}), "telemetry through the restarted module")
    client.shutdown()
    assert "tagged 3" in edge.cli("logs", "ai_insights", "--tail", "5").stdout

    # Removed from the deployment: the process stops, the identity is deleted at the hub.
    new_pid = int((module_dir / "pid").read_text())
    edge.set_modules(deployment({}, {"route": "FROM /messages/* INTO $upstream"}))
    edge.wait_for(lambda: not Path(f"/proc/{new_pid}").exists(), "ai_insights stopping")
    edge.wait_for(lambda: "ai_insights" not in edge.listed(), "ai_insights gone from edge list")
    assert "ai_insights" not in [m.module_id for m in registry(hub).get_modules(edge.edge_id)]


def test_set_modules_refuses_an_invalid_manifest_and_writes_nothing(hub, edge):
    before = registry(hub).get_module_twin(edge.edge_id, "$edgeAgent").properties.desired["$version"]
    bad_route = deployment({}, {"bad": "FROM /messages/* INTO nowhere"})
    p = edge.set_modules(bad_route, check=False)
    assert p.returncode != 0 and "error parsing route bad" in p.stderr, p.stderr
    wasm = deployment({"m": {"type": "wasm", "settings": {}}}, ROUTES)
    p = edge.set_modules(wasm, check=False)
    assert p.returncode != 0 and 'unknown module type "wasm"' in p.stderr, p.stderr
    after = registry(hub).get_module_twin(edge.edge_id, "$edgeAgent").properties.desired["$version"]
    assert after == before


def test_modules_left_by_a_killed_agent_are_replaced_on_restart(hub, edge):
    """SIGKILL the agent: its module and gateway processes outlive it; the next agent kills them
    (they are in its pid records) before it starts the deployment again."""
    sleeper = {"type": "process", "settings": {"command": "/bin/sleep", "args": ["600"]}}
    edge.set_modules(deployment({"sleeper": sleeper}, {"route": "FROM /messages/* INTO $upstream"}))
    edge.wait_for(lambda: (l := edge.listed()).get("sleeper", ("",))[0] == "running"
                  and l.get("edgeHub", ("",))[0] == "running", "sleeper and edgeHub running")
    pids_dir = edge.config.parent / "agent" / "state" / "pids"
    old = {m: int((pids_dir / m).read_text().split()[0]) for m in ("sleeper", "edgeHub")}
    edge.proc.kill()
    edge.proc.wait(timeout=20)
    assert all(Path(f"/proc/{p}").exists() for p in old.values()), "modules outlive a SIGKILLed agent"
    edge.proc = subprocess.Popen([str(BIN), *EDGE, "agent", "--config", str(edge.config)],
                                 stdout=open(edge.log, "a"), stderr=subprocess.STDOUT)
    edge.wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in old.values()), "the old processes killed")
    edge.wait_for(lambda: (l := edge.listed()).get("sleeper", ("",))[0] == "running"
                  and l.get("edgeHub", ("",))[0] == "running", "sleeper and edgeHub running again")
    log = edge.cli("logs", "edgeAgent").stdout
    assert "Killed module sleeper, left running by an earlier agent" in log, log
    assert "Killed module edgeHub, left running by an earlier agent" in log, log
    client = edge.child_client()  # the new gateway has the port
    client.shutdown()

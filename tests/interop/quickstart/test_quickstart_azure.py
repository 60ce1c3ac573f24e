"""`ferrohub quickstart --keep-running --azure-ports`: the unmodified Python device SDK connects as
a child through the quickstart's gateway using only what quickstart.json says (issue 9). Runs in
its own pytest session because it binds the Azure ports the main interop suite's hub uses."""

import base64
import hashlib
import hmac
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from azure.iot.device import IoTHubDeviceClient, Message, X509

BIN = Path(os.environ.get("FERROHUB_BIN", Path(__file__).resolve().parents[3] / "target/debug/ferrohub"))


def service_token(cs, ttl=3600):
    parts = dict(p.split("=", 1) for p in cs.split(";"))
    expiry = int(time.time()) + ttl
    resource = urllib.parse.quote(parts["HostName"], safe="")
    sig = hmac.new(base64.b64decode(parts["SharedAccessKey"]), f"{resource}\n{expiry}".encode(), hashlib.sha256)
    sig = urllib.parse.quote(base64.b64encode(sig.digest()), safe="")
    return f"SharedAccessSignature sr={resource}&sig={sig}&se={expiry}&skn={parts['SharedAccessKeyName']}"


def events(info, device):
    hub = info["hub"]
    ctx = ssl.create_default_context(cafile=info["rootCaFile"])
    ctx.check_hostname = False  # dialled by address; the certificate names the hub's host name
    req = urllib.request.Request(f"https://{hub['https']}/events?device={device}&from=0&limit=1000&api-version=2021-04-12",
                                 headers={"Authorization": service_token(hub["serviceConnectionString"])})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        return [json.loads(line) for line in r.read().decode().splitlines() if line.strip()]


def wait_ready(path, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"quickstart exited with {proc.returncode}"
        if path.exists():
            try:
                info = json.loads(path.read_text())
                if info.get("keepRunning") and info.get("azurePorts"):
                    return info
            except json.JSONDecodeError:
                pass  # being written
        time.sleep(0.3)
    raise AssertionError("quickstart did not become ready")


def test_the_sdk_connects_as_a_child_through_the_quickstart_gateway(tmp_path):
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("--azure-ports needs root (CI runs as root)")
        pytest.skip("--azure-ports needs root")
    log = open(tmp_path / "quickstart.log", "w")
    proc = subprocess.Popen([str(BIN), "quickstart", "--fresh", "--keep-running", "--azure-ports", "--data-dir",
                             str(tmp_path / "qs")], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        info = wait_ready(tmp_path / "qs" / "quickstart.json", proc)
        root = Path(info["rootCaFile"]).read_text()
        sas = next(c for c in info["children"] if "SharedAccessKey=" in c["connectionString"])
        assert "GatewayHostName=" in sas["connectionString"]
        client = IoTHubDeviceClient.create_from_connection_string(sas["connectionString"], server_verification_cert=root)
        client.connect()
        client.send_message(Message("hello from the python sdk"))
        client.shutdown()

        x = next(c for c in info["children"] if c.get("certFile"))
        fields = dict(p.split("=", 1) for p in x["connectionString"].split(";"))
        client = IoTHubDeviceClient.create_from_x509_certificate(
            x509=X509(x["certFile"], x["keyFile"]), hostname=fields["HostName"], device_id=x["deviceId"],
            gateway_hostname=fields["GatewayHostName"], server_verification_cert=root)
        client.connect()
        client.send_message(Message("hello from an x509 child"))
        client.shutdown()

        for device, body in ((sas["deviceId"], "hello from the python sdk"), (x["deviceId"], "hello from an x509 child")):
            deadline = time.monotonic() + 30
            while not [e for e in events(info, device) if e["body"] == body]:
                assert time.monotonic() < deadline, f"{device}'s message did not reach the hub"
                time.sleep(0.3)
            got = [e for e in events(info, device) if e["body"] == body][0]
            assert got["systemProperties"]["iothub-connection-device-id"] == device
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, (tmp_path / "quickstart.log").read_text()[-3000:]

"""The identity service (seed 004): `ferrohub config apply` + `ferrohub identity run` on this
machine, a module process of another uid reading its identity over the Unix socket and signing a
SAS token through keyd, then the Python SDK connecting with it; and DPS X.509 provisioning of an
edge device (seed 002) through identityd."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BIN, run
from test_hub import registry, unique

MODULE_UID, STRANGER_UID = 1001, 1002

# What a module process does, with nothing but the standard library: its identity from identityd,
# a signature from keyd, and a connection string built from them.
MODULE_SCRIPT = r'''
import base64, http.client, json, socket, sys, time, urllib.parse
class Uds(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)
def call(sock, method, path, body=None):
    c = Uds(sock)
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers={"content-type": "application/json"})
    r = c.getresponse()
    return r.status, json.loads(r.read() or b"null")
run_dir = sys.argv[1]
status, identity = call(run_dir + "/identityd.sock", "GET", "/identities/identity?api-version=2020-09-01")
assert status == 200, (status, identity)
spec = identity["spec"]
resource = f'{spec["hubName"]}/devices/{spec["deviceId"]}/modules/{spec["moduleId"]}'
sr = urllib.parse.quote(resource, safe="")
expiry = int(time.time()) + 3600
message = base64.b64encode(f"{sr}\n{expiry}".encode()).decode()
status, signed = call(run_dir + "/keyd.sock", "POST", "/sign?api-version=2020-09-01",
                      {"keyHandle": spec["auth"]["keyHandle"], "algorithm": "HMAC-SHA256", "parameters": {"message": message}})
assert status == 200, (status, signed)
sig = urllib.parse.quote(signed["signature"], safe="")
token = f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}"
cs = f'HostName={spec["hubName"]};DeviceId={spec["deviceId"]};ModuleId={spec["moduleId"]};SharedAccessSignature={token}'
if spec["gatewayHost"] != spec["hubName"]:
    cs += f';GatewayHostName={spec["gatewayHost"]}'
print(json.dumps({"connection_string": cs, "token": token, "gateway": spec["gatewayHost"]}))
if len(sys.argv) > 2:
    # Connect with the Python device SDK, as this uid, with what was just built.
    from azure.iot.device import IoTHubModuleClient, Message
    client = IoTHubModuleClient.create_from_sastoken(token, server_verification_cert=open(sys.argv[2]).read())
    client.connect()
    client.send_message(Message("from-pymodule"))
    client.shutdown()
'''


class IdentityService:
    """`ferrohub identity run --root R` with a super-config applied under R. R is world-readable
    so processes of other uids reach the sockets (which are 0666; authorization is by uid)."""

    def __init__(self, super_config: str):
        self.root = Path(tempfile.mkdtemp(prefix="ferrohub-identity-"))
        os.chmod(self.root, 0o755)
        self.run_dir = self.root / "run" / "ferrohub"
        self.config = self.root / "config.toml"
        self.config.write_text(super_config)
        self.log = self.root / "identity.log"
        out = run("config", "apply", "-c", str(self.config), "--root", str(self.root)).stdout
        assert "identityd" in out, out
        env = dict(os.environ, FERROHUB_LOG="info")
        self.proc = subprocess.Popen([str(BIN), "identity", "run", "--root", str(self.root)],
                                     stdout=open(self.log, "a"), stderr=subprocess.STDOUT, env=env)

    def as_uid(self, uid, *cmd):
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, user=uid)

    def curl_identity(self, uid):
        """Seed 004's command, as `uid`: (status, body)."""
        p = self.as_uid(uid, "curl", "-s", "-w", "\n%{http_code}", "--unix-socket", str(self.run_dir / "identityd.sock"),
                        "http://identityd.sock/identities/identity?api-version=2020-09-01")
        body, _, status = p.stdout.rpartition("\n")
        return int(status or 0), json.loads(body) if body.strip() else None

    def wait_for(self, check, what, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the identity service exited: {self.log.read_text()}")
            if check():
                return
            time.sleep(0.3)
        raise AssertionError(f"{what} did not happen in {timeout}s: {self.log.read_text()}")

    def status(self):
        return run("system", "status", "--root", str(self.root), check=False)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        shutil.rmtree(self.root, ignore_errors=True)


def test_a_module_of_another_uid_gets_its_identity_signs_through_keyd_and_connects(hub):
    device_id = unique("py-idsvc")
    d = registry(hub).create_device_with_sas(device_id, "", "", "enabled")
    key = d.authentication.symmetric_key.primary_key
    svc = IdentityService(f'''
hostname = "py-edge"
trust_bundle_cert = "file://{hub.root_ca}"
[provisioning]
source = "manual"
connection_string = "HostName=localhost;DeviceId={device_id};SharedAccessKey={key}"
[[principal]]
uid = {MODULE_UID}
name = "pymodule"
idtype = ["module"]
''')
    try:
        svc.wait_for(lambda: svc.curl_identity(MODULE_UID)[0] == 200, "the module identity")
        status, identity = svc.curl_identity(MODULE_UID)
        assert identity["type"] == "aziot"
        spec = identity["spec"]
        assert (spec["hubName"], spec["deviceId"], spec["moduleId"]) == ("localhost", device_id, "pymodule")
        assert spec["auth"]["type"] == "sas" and spec["auth"]["keyHandle"].startswith("sr=")
        assert [m.module_id for m in registry(hub).get_modules(device_id)] == ["pymodule"]
        # An uid without a principal is refused, and the refusal names it in the log.
        status, body = svc.curl_identity(STRANGER_UID)
        assert status == 401, body
        assert f"uid={STRANGER_UID}" in svc.log.read_text()
        # The module process (uid 1001) signs through keyd, builds its connection string and
        # connects with the Python SDK (from a world-readable copy of the venv's packages, run by
        # the system interpreter: the venv's may live where that uid cannot reach).
        script = svc.root / "module.py"
        script.write_text(MODULE_SCRIPT)
        root_pem = svc.root / "root-ca.pem"
        root_pem.write_text(hub.root_pem())
        packages = svc.root / "site-packages"
        shutil.copytree(next(Path(sys.prefix).glob("lib/python3*/site-packages")), packages)
        for p in [script, root_pem, *packages.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        env = dict(os.environ, PYTHONPATH=str(packages), HOME=str(svc.root))
        p = subprocess.run(["/usr/bin/python3", str(script), str(svc.run_dir), str(root_pem)],
                           capture_output=True, text=True, timeout=120, user=MODULE_UID, env=env)
        assert p.returncode == 0, p.stderr
        built = json.loads(p.stdout.splitlines()[0])
        assert "SharedAccessSignature=SharedAccessSignature sr=" in built["connection_string"]
        events = [e for e in hub.events(device_id) if e["body"] == "from-pymodule"]
        assert len(events) == 1 and events[0]["moduleId"] == "pymodule"
        out = svc.status()
        assert out.returncode == 0 and device_id in out.stdout and "localhost" in out.stdout, out.stdout + out.stderr
    finally:
        svc.stop()


def test_dps_x509_provisioning_of_an_edge_device_through_identityd(hub, dps, pki):
    """Seed 002 with the identity service: the device's full-chain certificate and key in the
    super-config, an X.509 group enrollment with --edge; identityd registers and the hub has an
    edge device."""
    group = unique("py-idgrp")
    dps.cli("enrollment-group", "create", group, "--signing-cert", str(pki / "intermediate-ca.cert.pem"), "--edge", "--hub", "localhost")
    device_id = unique("py-iddps")
    run("certs", "device", device_id, "--dir", str(pki), "--issuer", "intermediate-ca")
    svc = IdentityService(f'''
hostname = "py-dps-edge"
trust_bundle_cert = "file://{dps.roots}"
[provisioning]
source = "dps"
global_endpoint = "https://127.0.0.2"
id_scope = "{dps.id_scope}"
[provisioning.attestation]
method = "x509"
registration_id = "{device_id}"
identity_cert = "file://{pki / f"iot-device-{device_id}-full-chain.cert.pem"}"
identity_pk = "file://{pki / f"iot-device-{device_id}.key.pem"}"
[[principal]]
uid = {MODULE_UID}
name = "edgemodule"
idtype = ["module"]
''')
    try:
        svc.wait_for(lambda: svc.status().returncode == 0, "provisioning")
        out = svc.status().stdout
        assert device_id in out and "localhost" in out, out
        device = registry(hub).get_device(device_id)
        assert device.capabilities.iot_edge is True
        # DPS registers the leaf's thumbprint at the hub, as Azure DPS does (no CA needed there).
        assert device.authentication.type == "selfSigned"
        assert device.authentication.x509_thumbprint.primary_thumbprint
        # identityd manages the module through the hub's API with the device's certificate.
        svc.wait_for(lambda: "edgemodule" in [m.module_id for m in registry(hub).get_modules(device_id)], "the module identity")
        check = run("system", "check", "--root", str(svc.root), check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        svc.stop()

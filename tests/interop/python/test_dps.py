"""The real Python provisioning client (azure-iot-device 2.14) against a ferrohub provisioning
service, then the device client against the hub it was assigned to."""

import hashlib
import json
import ssl

import pytest
from azure.iot.device import IoTHubDeviceClient, Message, ProvisioningDeviceClient, X509
from azure.iot.device.exceptions import ClientError, CredentialError
from msrest.exceptions import HttpOperationError

from conftest import run
from test_hub import KEY, REFUSED, registry, unique

DPS_HOST = "127.0.0.2"


def group_key(dps, group_id):
    out = dps.cli("enrollment-group", "show", group_id, "--json").stdout
    return json.loads(out)["attestation"]["symmetricKey"]["primaryKey"]


def leaf_thumbprint(pki, device_id):
    """The SHA-1 thumbprint of a device's own certificate, as the hub shows it."""
    pem = (pki / f"iot-device-{device_id}.cert.pem").read_text()
    return hashlib.sha1(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()


def test_x509_group_registers_and_the_device_sends_to_its_hub(hub, dps, pki):
    """Seed 002: an X.509 group enrollment (the intermediate given inline), an edge device with a
    full-chain certificate whose CN is the registration id."""
    group = unique("py-x509grp")
    dps.cli("enrollment-group", "create", group, "--signing-cert", str(pki / "intermediate-ca.cert.pem"), "--edge",
            "--hub", "localhost")
    device_id = unique("py-edge")
    run("certs", "device", device_id, "--dir", str(pki), "--issuer", "intermediate-ca")
    x509 = X509(cert_file=str(pki / f"iot-device-{device_id}-full-chain.cert.pem"),
                key_file=str(pki / f"iot-device-{device_id}.key.pem"))
    client = ProvisioningDeviceClient.create_from_x509_certificate(
        provisioning_host=DPS_HOST, registration_id=device_id, id_scope=dps.id_scope, x509=x509,
        server_verification_cert=hub.root_pem())
    result = client.register()
    assert result.status == "assigned", result
    state = result.registration_state
    assert state.assigned_hub == "localhost" and state.device_id == device_id
    assert state.sub_status == "initialAssignment"
    device = registry(hub).get_device(device_id)
    assert device.capabilities.iot_edge is True
    # The hub knows the leaf's thumbprint (as Azure DPS writes it), not the CA.
    assert device.authentication.type == "selfSigned"
    assert device.authentication.x509_thumbprint.primary_thumbprint == leaf_thumbprint(pki, device_id)
    d = IoTHubDeviceClient.create_from_x509_certificate(
        x509, hostname=state.assigned_hub, device_id=state.device_id, server_verification_cert=hub.root_pem())
    d.connect()
    d.send_message(Message("provisioned"))
    d.shutdown()
    bodies = [e["body"] for e in hub.events(device_id)]
    assert bodies == ["provisioned"]
    record = json.loads(dps.cli("registration", "show", device_id, "--json").stdout)
    assert record["assignedHub"] == "localhost"


def test_x509_group_device_reaches_a_hub_that_does_not_know_its_ca(hub, dps, tmp_path):
    """Seed 002 as written: the CA is given to the provisioning service only. The device's chain
    (root → intermediate → device) is unknown to the hub, which still accepts the device because
    the service registered the thumbprint of the certificate it provisioned with."""
    run("certs", "root-ca", "--dir", str(tmp_path), "--cn", "DPS-only Root")
    run("certs", "intermediate-ca", "--dir", str(tmp_path), "--cn", "DPS-only Intermediate")
    group = unique("py-dpsonly")
    dps.cli("enrollment-group", "create", group, "--signing-cert", str(tmp_path / "intermediate-ca.cert.pem"),
            "--hub", "localhost")
    device_id = unique("py-dpsonly-dev")
    run("certs", "device", device_id, "--dir", str(tmp_path), "--issuer", "intermediate-ca")
    x509 = X509(cert_file=str(tmp_path / f"iot-device-{device_id}-full-chain.cert.pem"),
                key_file=str(tmp_path / f"iot-device-{device_id}.key.pem"))
    hub_cas = hub.cli("hub", "ca", "list").stdout
    assert "DPS-only" not in hub_cas, hub_cas
    client = ProvisioningDeviceClient.create_from_x509_certificate(
        provisioning_host=DPS_HOST, registration_id=device_id, id_scope=dps.id_scope, x509=x509,
        server_verification_cert=hub.root_pem())
    result = client.register()
    assert result.status == "assigned", result
    device = registry(hub).get_device(device_id)
    assert device.authentication.type == "selfSigned"
    assert device.authentication.x509_thumbprint.primary_thumbprint == leaf_thumbprint(tmp_path, device_id)
    d = IoTHubDeviceClient.create_from_x509_certificate(
        x509, hostname=result.registration_state.assigned_hub, device_id=device_id,
        server_verification_cert=hub.root_pem())
    d.connect()
    d.send_message(Message("no CA at the hub"))
    d.shutdown()
    assert [e["body"] for e in hub.events(device_id)] == ["no CA at the hub"]


def test_symmetric_key_group_with_payload_and_initial_twin(hub, dps):
    group = unique("py-symgrp")
    dps.cli("enrollment-group", "create", group, "--symmetric-key", "--tags", '{"site": "py-lab"}', "--desired", '{"rate": 3}',
            "--hub", "localhost")
    registration_id = unique("py-sym")
    key = run("dps", "derive-key", "--group-key", group_key(dps, group), "--registration-id", registration_id).stdout.strip()
    client = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=DPS_HOST, registration_id=registration_id, id_scope=dps.id_scope,
        symmetric_key=key, server_verification_cert=hub.root_pem())
    client.provisioning_payload = {"fw": "1.0", "model": "py"}
    result = client.register()
    assert result.status == "assigned", result
    # The SDK hands the payload back as JSON text.
    assert json.loads(result.registration_state.response_payload) == {"fw": "1.0", "model": "py"}
    twin = registry(hub).get_twin(registration_id)
    assert twin.tags["site"] == "py-lab"
    assert twin.properties.desired["rate"] == 3
    d = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=key, hostname=result.registration_state.assigned_hub, device_id=registration_id,
        server_verification_cert=hub.root_pem())
    d.connect()
    assert d.get_twin()["desired"]["rate"] == 3
    d.shutdown()


@pytest.mark.parametrize("case", ["wrong-key", "disabled", "unknown-scope"])
def test_refused_registrations_create_nothing(hub, dps, case):
    group = unique("py-neg")
    args = ["--symmetric-key"] + (["--disabled"] if case == "disabled" else [])
    dps.cli("enrollment-group", "create", group, *args)
    registration_id = unique(f"py-{case}")
    key = run("dps", "derive-key", "--group-key", group_key(dps, group), "--registration-id", registration_id).stdout.strip()
    if case == "wrong-key":
        key = group_key(dps, group)  # the group key itself, not the derived one
    scope = "0ne99999999" if case == "unknown-scope" else dps.id_scope
    client = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=DPS_HOST, registration_id=registration_id, id_scope=scope,
        symmetric_key=key, server_verification_cert=hub.root_pem())
    with pytest.raises((CredentialError, ClientError) + tuple(REFUSED)):
        client.register()
    with pytest.raises(HttpOperationError):
        registry(hub).get_device(registration_id)
    reason = {"wrong-key": "no_enrollment", "disabled": "enrollment_disabled", "unknown-scope": "bad_username"}[case]
    assert f'code="{reason}"' in dps.log_text() or f"code={reason}" in dps.log_text()


@pytest.mark.parametrize("mode,substatus,expected", [("migrate", "deviceDataMigrated", "changed"), ("reset", "deviceDataReset", "initial")])
def test_reprovisioning_moves_the_device_to_the_other_hub(hub, hub2, dps, mode, substatus, expected):
    """updateHubAssignment: the enrollment's hub changes, the device registers again and moves,
    with its twin (migrate) or with the enrollment's initial twin (reset); the first hub forgets it."""
    from azure.iot.hub import IoTHubRegistryManager
    from azure.iot.hub.models import Twin
    registration_id = unique(f"py-move-{mode}")

    def enroll(target):
        return json.loads(dps.cli("enrollment", "create", registration_id, "--symmetric-key", "--primary-key", KEY,
                                  "--secondary-key", KEY, "--allocation", "static", "--hub", target,
                                  "--tags", '{"state": "initial"}', "--reprovision", mode, "--json").stdout)

    def provision():
        client = ProvisioningDeviceClient.create_from_symmetric_key(
            provisioning_host=DPS_HOST, registration_id=registration_id, id_scope=dps.id_scope,
            symmetric_key=KEY, server_verification_cert=dps.roots_pem())
        result = client.register()
        assert result.status == "assigned", result
        return result.registration_state

    enroll("localhost")
    assert provision().assigned_hub == "localhost"
    rm1 = registry(hub)
    rm1.update_twin(registration_id, Twin(tags={"state": "changed"}), "*")
    enroll("127.0.0.3")
    state = provision()
    assert (state.assigned_hub, state.sub_status) == ("127.0.0.3", substatus)
    rm2 = IoTHubRegistryManager.from_connection_string(hub2.connection_string)
    assert rm2.get_twin(registration_id).tags["state"] == expected
    with pytest.raises(HttpOperationError):
        rm1.get_device(registration_id)
    d = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=KEY, hostname=state.assigned_hub, device_id=state.device_id,
        server_verification_cert=dps.roots_pem())
    d.connect()
    d.send_message(Message(f"moved-{mode}"))
    d.shutdown()
    assert [e["body"] for e in hub2.events(registration_id)] == [f"moved-{mode}"]

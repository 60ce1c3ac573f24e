"""Fixtures for the Python SDK interop suite: a real ferrohub hub on 127.0.0.1:8883 / :443.

The Azure SDKs hard-wire ports 8883 (MQTT) and 443 (HTTPS), so the hub binds them on loopback;
that needs root or CAP_NET_BIND_SERVICE (CI runs as root).
"""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("FERROHUB_BIN", REPO / "target" / "debug" / "ferrohub"))


def run(*args, check=True, **kw):
    """Runs the ferrohub CLI and returns the CompletedProcess."""
    proc = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=120, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"ferrohub {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def wait_port(port, timeout=30.0, host="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {host}:{port}")


class Hub:
    def __init__(self, base: Path, ip="127.0.0.1", hostnames=("localhost", "127.0.0.1")):
        self.ip = ip
        self.dir = base / "hub"
        self.config = self.dir / "hub.toml"
        self.root_ca = self.dir / "certs" / "root-ca.cert.pem"
        self.log = base / "hub.log"
        self.proc = None
        names = [a for h in hostnames for a in ("--hostname", h)]
        run("hub", "init", "--dir", str(self.dir), *names, "--mqtt", f"{ip}:8883", "--https", f"{ip}:443",
            "--amqp", f"{ip}:5671")
        self.connection_string = run("hub", "connection-string", "--config", str(self.config)).stdout.strip()

    def start(self):
        env = dict(os.environ, FERROHUB_LOG="info,hub=debug")
        logf = open(self.log, "a")
        self.proc = subprocess.Popen([str(BIN), "hub", "--config", str(self.config)], stdout=logf, stderr=logf, env=env)
        wait_port(443, host=self.ip)
        wait_port(8883, host=self.ip)
        wait_port(5671, host=self.ip)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def cli(self, *args, check=True):
        return run(*args, "--config", str(self.config), check=check)

    def events(self, device):
        out = self.cli("hub", "events", "--device", device, "--from-start").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def log_text(self):
        return self.log.read_text()

    def root_pem(self):
        return self.root_ca.read_text()


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    assert BIN.exists(), f"{BIN} is missing: build it with `cargo build` first"
    h = Hub(tmp_path_factory.mktemp("ferrohub"))
    os.environ["REQUESTS_CA_BUNDLE"] = str(h.root_ca)
    h.start()
    yield h
    h.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory, hub):
    """A device PKI (root → intermediate) whose intermediate is uploaded and verified on the hub."""
    d = tmp_path_factory.mktemp("devpki")
    run("certs", "root-ca", "--dir", str(d), "--cn", "Interop Device Root")
    run("certs", "intermediate-ca", "--dir", str(d), "--cn", "Interop Device Intermediate")
    hub.cli("hub", "ca", "upload", "interop-inter", "--cert", str(d / "intermediate-ca.cert.pem"))
    code = hub.cli("hub", "ca", "verification-code", "interop-inter").stdout.strip()
    run("certs", "verification-cert", "--dir", str(d), "--code", code, "--issuer", "intermediate-ca")
    hub.cli("hub", "ca", "verify", "interop-inter", "--cert", str(d / f"verification-{code}.cert.pem"))
    return d


class Dps:
    """A ferrohub provisioning service on 127.0.0.2:8883/:443, linked to the session hub
    (`localhost`) and a second hub (`127.0.0.3`). It shares the session hub's root CA; the second
    hub has its own, so devices and the service trust both roots."""

    def __init__(self, base: Path, hub: Hub, hub2: Hub):
        self.dir = base / "dps"
        self.config = self.dir / "dps.toml"
        self.log = base / "dps.log"
        self.proc = None
        self.roots = base / "hub-roots.pem"
        self.roots.write_text(hub.root_pem() + hub2.root_pem())
        run("dps", "init", "--dir", str(self.dir), "--hostname", "127.0.0.2",
            "--mqtt", "127.0.0.2:8883", "--https", "127.0.0.2:443",
            "--link-hub", hub.connection_string, "--link-hub", hub2.connection_string,
            "--hub-ca", str(self.roots), "--ca-dir", str(hub.dir / "certs"))
        self.id_scope = run("dps", "id-scope", "--config", str(self.config)).stdout.strip()

    def start(self):
        env = dict(os.environ, FERROHUB_LOG="info")
        logf = open(self.log, "a")
        self.proc = subprocess.Popen([str(BIN), "dps", "--config", str(self.config)], stdout=logf, stderr=logf, env=env)
        wait_port(443, host="127.0.0.2")
        wait_port(8883, host="127.0.0.2")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None

    def cli(self, *args, check=True):
        return run("dps", *args, "--config", str(self.config), check=check)

    def log_text(self):
        return self.log.read_text()

    def roots_pem(self):
        """What a device trusts: the provisioning service's (= the session hub's) root and hub2's."""
        return self.roots.read_text()


@pytest.fixture(scope="session")
def hub2(tmp_path_factory, hub):
    h = Hub(tmp_path_factory.mktemp("ferrohub-hub2"), ip="127.0.0.3", hostnames=("127.0.0.3",))
    bundle = h.dir.parent / "both-hub-roots.pem"
    bundle.write_text(hub.root_pem() + h.root_pem())
    os.environ["REQUESTS_CA_BUNDLE"] = str(bundle)  # the service SDK talks to both hubs
    h.start()
    yield h
    h.stop()


@pytest.fixture(scope="session")
def dps(tmp_path_factory, hub, hub2):
    d = Dps(tmp_path_factory.mktemp("ferrohub-dps"), hub, hub2)
    d.start()
    yield d
    d.stop()

// Seed 001's downstream device sample with the real Node SDK (azure-iot-device + -mqtt): 10
// messages through a ferrohub edge gateway on 127.0.0.4, trusting only the root CA; the hub (on
// 127.0.0.1) shows them as from the device.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const { spawn, execFileSync } = require('node:child_process');

const REPO = path.resolve(__dirname, '..', '..', '..');
const BIN = process.env.FERROHUB_BIN || path.join(REPO, 'target', 'debug', 'ferrohub');
const base = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrohub-node-edge-'));
const hubDir = path.join(base, 'hub');
const config = path.join(hubDir, 'hub.toml');
const certs = path.join(hubDir, 'certs');
const rootCa = path.join(certs, 'root-ca.cert.pem');
const procs = [];
let child;
let childKey;

function cli(...args) {
  return execFileSync(BIN, args, { encoding: 'utf8' });
}

function waitPort(host, port) {
  const deadline = Date.now() + 30000;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const s = net.connect(port, host, () => { s.end(); resolve(); });
      s.on('error', () => (Date.now() > deadline ? reject(new Error(`${host}:${port}`)) : setTimeout(attempt, 100)));
    };
    attempt();
  });
}

function serve(args, logName) {
  const log = fs.openSync(path.join(base, logName), 'a');
  procs.push(spawn(BIN, args, { stdio: ['ignore', log, log] }));
}

before(async () => {
  cli('hub', 'init', '--dir', hubDir, '--hostname', 'localhost', '--mqtt', '127.0.0.1:8883', '--https', '127.0.0.1:443');
  serve(['hub', '--config', config], 'hub.log');
  await waitPort('127.0.0.1', 443);
  cli('certs', 'edge-ca', 'node-edge', '--dir', certs);
  cli('edge', 'init', '--dir', path.join(base, 'edge'), '--edge-id', 'node-gw', '--hostname', '127.0.0.4',
    '--listen', '127.0.0.4:8883', '--config', config, '--ca-dir', certs, '--edge-ca', 'node-edge');
  child = 'node-downstream';
  childKey = JSON.parse(cli('hub', 'device', 'create', child, '--parent', 'node-gw', '--json', '--config', config))
    .authentication.symmetricKey.primaryKey;
  serve(['edge', '--config', path.join(base, 'edge', 'edge.toml')], 'edge.log');
  await waitPort('127.0.0.4', 8883);
});

after(() => {
  for (const p of procs) p.kill('SIGTERM');
});

test('a downstream device sends 10 messages through the gateway (seed 001 sample)', async () => {
  const { Client, Message } = require('azure-iot-device');
  const { Mqtt } = require('azure-iot-device-mqtt');
  const cs = `HostName=localhost;DeviceId=${child};SharedAccessKey=${childKey};GatewayHostName=127.0.0.4`;
  const client = Client.fromConnectionString(cs, Mqtt);
  await client.setOptions({ ca: fs.readFileSync(rootCa, 'utf8') });
  await client.open();
  for (let i = 0; i < 10; i++) {
    const m = new Message(JSON.stringify({ i }));
    m.properties.add('seq', String(i));
    await client.sendEvent(m);
  }
  await client.close();
  let events = [];
  for (let attempt = 0; attempt < 100 && events.length < 10; attempt++) {
    const out = cli('hub', 'events', '--config', config, '--device', child, '--from-start');
    events = out.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
    if (events.length < 10) await new Promise((r) => setTimeout(r, 200));
  }
  assert.deepStrictEqual(events.map((e) => e.properties.seq), [...Array(10).keys()].map(String));
  assert.ok(events.every((e) => e.systemProperties['iothub-connection-device-id'] === child));
});

// The real Node provisioning SDKs (azure-iot-provisioning-device with -mqtt and -http, the
// symmetric-key and X.509 security clients, azure-iot-provisioning-service) against a ferrohub
// provisioning service on 127.0.0.2:8883/443, linked to a ferrohub hub on 127.0.0.1.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');
const { spawn, execFile, execFileSync } = require('node:child_process');
const { promisify } = require('node:util');

const REPO = path.resolve(__dirname, '..', '..', '..');
const BIN = process.env.FERROHUB_BIN || path.join(REPO, 'target', 'debug', 'ferrohub');
const base = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrohub-node-dps-'));
const hubDir = path.join(base, 'hub');
const dpsDir = path.join(base, 'dps');
const rootCa = path.join(hubDir, 'certs', 'root-ca.cert.pem');
const procs = [];
let idScope;
let dpsCs;

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

function serve(kind, config, logName) {
  const log = fs.openSync(path.join(base, logName), 'a');
  procs.push(spawn(BIN, [kind, '--config', config], { stdio: ['ignore', log, log], env: { ...process.env, FERROHUB_LOG: 'info' } }));
}

before(async () => {
  cli('hub', 'init', '--dir', hubDir, '--hostname', 'localhost', '--mqtt', '127.0.0.1:8883', '--https', '127.0.0.1:443');
  const hubCs = cli('hub', 'connection-string', '--config', path.join(hubDir, 'hub.toml')).trim();
  cli('dps', 'init', '--dir', dpsDir, '--hostname', '127.0.0.2', '--mqtt', '127.0.0.2:8883', '--https', '127.0.0.2:443',
    '--link-hub', hubCs, '--hub-address', '127.0.0.1:443', '--ca-dir', path.join(hubDir, 'certs'));
  idScope = cli('dps', 'id-scope', '--config', path.join(dpsDir, 'dps.toml')).trim();
  dpsCs = cli('dps', 'connection-string', '--config', path.join(dpsDir, 'dps.toml')).trim();
  serve('hub', path.join(hubDir, 'hub.toml'), 'hub.log');
  serve('dps', path.join(dpsDir, 'dps.toml'), 'dps.log');
  await waitPort('127.0.0.1', 443);
  await waitPort('127.0.0.2', 443);
  await waitPort('127.0.0.2', 8883);
});

after(() => {
  for (const p of procs) p.kill('SIGTERM');
});

// Node reads NODE_EXTRA_CA_CERTS only at start, so the SDKs run in child processes that have it.
const SCRIPT = `
  const fs = require('fs');
  const [op, arg] = JSON.parse(process.env.ARGS);
  const run = async () => {
    if (op === 'register') {
      const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
      const Transport = require('azure-iot-provisioning-device-' + arg.transport)[arg.transport === 'mqtt' ? 'Mqtt' : 'Http'];
      let security;
      if (arg.key) {
        const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
        security = new SymmetricKeySecurityClient(arg.registrationId, arg.key);
      } else {
        const { X509Security } = require('azure-iot-security-x509');
        security = new X509Security(arg.registrationId, { cert: fs.readFileSync(arg.cert, 'utf8'), key: fs.readFileSync(arg.keyFile, 'utf8') });
      }
      const client = ProvisioningDeviceClient.create('127.0.0.2', arg.idScope, new Transport(), security);
      if (arg.payload) client.setProvisioningPayload(arg.payload);
      const r = await client.register();
      return { assignedHub: r.assignedHub, deviceId: r.deviceId, payload: r.payload, substatus: r.substatus };
    }
    const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
    const svc = ProvisioningServiceClient.fromConnectionString(process.env.DPS_CS);
    if (op === 'create-group') return (await svc.createOrUpdateEnrollmentGroup(arg)).responseBody;
    if (op === 'create-enrollment') return (await svc.createOrUpdateIndividualEnrollment(arg)).responseBody;
    if (op === 'get-group') return (await svc.getEnrollmentGroup(arg)).responseBody;
    if (op === 'registration') return (await svc.getDeviceRegistrationState(arg)).responseBody;
    if (op === 'query-groups') {
      const q = svc.createEnrollmentGroupQuery({ query: '*' }, arg);
      const pages = [];
      while (q.hasMoreResults) {
        if (pages.length > 20) throw new Error('the query does not end');
        // The callback form: the promise form of next() without arguments drops the continuation
        // token (an SDK quirk, the same against Azure).
        const page = await new Promise((resolve, reject) => q.next((err, result) => (err ? reject(err) : resolve(result))));
        pages.push(page.map((g) => g.enrollmentGroupId));
      }
      return pages;
    }
    throw new Error('unknown op ' + op);
  };
  run().then((r) => console.log(JSON.stringify(r)),
    (err) => console.log(JSON.stringify({ error: err.constructor.name, message: err.message })));
`;

async function node(op, arg) {
  const { stdout } = await promisify(execFile)(process.execPath, ['-e', SCRIPT], {
    cwd: __dirname, encoding: 'utf8', timeout: 120000,
    env: { ...process.env, NODE_EXTRA_CA_CERTS: rootCa, DPS_CS: dpsCs, ARGS: JSON.stringify([op, arg]) },
  });
  return JSON.parse(stdout.trim().split('\n').pop());
}

function uid(prefix) {
  return `${prefix}-${Math.random().toString(16).slice(2, 10)}`;
}

test('the provisioning service SDK creates, reads and pages enrollment groups', async () => {
  const ids = [];
  for (let i = 0; i < 3; i++) {
    const id = uid('node-grp');
    const g = await node('create-group', { enrollmentGroupId: id, attestation: { type: 'symmetricKey' }, capabilities: { iotEdge: i === 0 } });
    assert.ok(!g.error, JSON.stringify(g));
    assert.ok(g.attestation.symmetricKey.primaryKey.length > 20, 'keys are generated');
    assert.ok(g.etag);
    ids.push(id);
  }
  const g = await node('get-group', ids[0]);
  assert.strictEqual(g.capabilities.iotEdge, true);
  const pages = await node('query-groups', 2);
  assert.ok(!pages.error, JSON.stringify(pages));
  assert.ok(pages.length >= 2 && pages.slice(0, -1).every((p) => p.length === 2), JSON.stringify(pages));
  for (const id of ids) assert.ok(pages.flat().includes(id));
});

for (const transport of ['mqtt', 'http']) {
  test(`a symmetric-key group device registers over ${transport} with a payload`, async () => {
    const group = uid(`node-sym-${transport}`);
    const g = await node('create-group', { enrollmentGroupId: group, attestation: { type: 'symmetricKey' } });
    const registrationId = uid(`node-${transport}`);
    const key = cli('dps', 'derive-key', '--group-key', g.attestation.symmetricKey.primaryKey, '--registration-id', registrationId).trim();
    const r = await node('register', { transport, idScope, registrationId, key, payload: { fw: transport } });
    assert.ok(!r.error, JSON.stringify(r));
    assert.strictEqual(r.assignedHub, 'localhost');
    assert.strictEqual(r.deviceId, registrationId);
    assert.deepStrictEqual(r.payload, { fw: transport });
    const state = await node('registration', registrationId);
    assert.strictEqual(state.assignedHub, 'localhost');
    const wrong = await node('register', { transport, idScope, registrationId, key: g.attestation.symmetricKey.primaryKey });
    assert.ok(wrong.error, 'the group key itself is not a device key');
  });

  test(`an individual X.509 enrollment registers over ${transport}`, async () => {
    const pki = path.join(base, `pki-${transport}`);
    const registrationId = uid(`node-x509-${transport}`);
    cli('certs', 'root-ca', '--dir', pki, '--cn', 'Node DPS Root');
    cli('certs', 'device', registrationId, '--dir', pki);
    const cert = path.join(pki, `iot-device-${registrationId}-full-chain.cert.pem`);
    const leaf = path.join(pki, `iot-device-${registrationId}.cert.pem`);
    const e = await node('create-enrollment', {
      registrationId,
      attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: fs.readFileSync(leaf, 'utf8') } } } },
    });
    assert.ok(!e.error, JSON.stringify(e));
    const r = await node('register', { transport, idScope, registrationId, cert, keyFile: path.join(pki, `iot-device-${registrationId}.key.pem`) });
    assert.ok(!r.error, JSON.stringify(r));
    assert.strictEqual(r.assignedHub, 'localhost');
    assert.strictEqual(r.substatus, 'initialAssignment');
  });
}

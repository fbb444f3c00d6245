import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ROOT } from './kit/harness.ts';

/**
 * The alert rules as Prometheus users check theirs: `promtool check rules` parses them and
 * `promtool test rules` runs the unit tests in test/fixtures/prometheus-alerts.test.yml, which
 * must cover every alert, firing and quiet. promtool is Debian's `prometheus` package.
 */
const run = promisify(execFile);
const RULES = join(ROOT, 'config/prometheus-alerts.yml');
const TESTS = join(ROOT, 'test/fixtures/prometheus-alerts.test.yml');

interface RuleFile {
  groups: { rules: { alert: string; expr: string }[] }[];
}
interface TestFile {
  tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
}

async function promtool(...args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await run('promtool', args, { cwd: ROOT });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

const alerts = (parse(readFileSync(RULES, 'utf8')) as RuleFile).groups.flatMap((g) => g.rules.map((r) => r.alert));

describe('prometheus alert rules', () => {
  it('promtool check rules accepts every rule', async () => {
    const r = await promtool('check', 'rules', RULES);
    expect(r.out).toContain(`SUCCESS: ${alerts.length} rules found`);
    expect(r.code).toBe(0);
  });

  it('promtool test rules passes, and every alert has a case where it fires and one where it stays quiet', async () => {
    const r = await promtool('test', 'rules', TESTS);
    expect(r.out).toContain('SUCCESS');
    expect(r.code).toBe(0);
    const cases = (parse(readFileSync(TESTS, 'utf8')) as TestFile).tests.flatMap((t) => t.alert_rule_test);
    for (const alert of alerts) {
      const mine = cases.filter((c) => c.alertname === alert);
      expect(mine.some((c) => c.exp_alerts.length > 0), `${alert} fires in some case`).toBe(true);
      expect(mine.some((c) => c.exp_alerts.length === 0), `${alert} is quiet in some case`).toBe(true);
    }
  });

  it('the unit tests fail on rules that never fire (they check the expressions, not just the syntax)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lrw-promtool-'));
    try {
      mkdirSync(join(dir, 'config'));
      mkdirSync(join(dir, 'test', 'fixtures'), { recursive: true });
      const silenced = (parse(readFileSync(RULES, 'utf8')) as RuleFile).groups.map((g) => ({ ...g, rules: g.rules.map((r) => ({ ...r, expr: `(${r.expr}) and on() vector(0) > 1` })) }));
      writeFileSync(join(dir, 'config/prometheus-alerts.yml'), JSON.stringify({ groups: silenced }));
      writeFileSync(join(dir, 'test/fixtures/prometheus-alerts.test.yml'), readFileSync(TESTS));
      const r = await promtool('test', 'rules', join(dir, 'test/fixtures/prometheus-alerts.test.yml'));
      expect(r.code).not.toBe(0);
      for (const alert of alerts) expect(r.out).toContain(`alertname: ${alert}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

import { describe, expect, it } from 'vitest';
import { Command, ConfigError, envName, flag, parseDuration, schemas, validate, z } from '../src/index.ts';

describe('config', () => {
  it('derives environment variable names from flags', () => {
    expect(envName('--etcd-endpoints')).toBe('SLUICE_ETCD_ENDPOINTS');
  });

  it('parses durations in the usual units', () => {
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('10s')).toBe(10_000);
    expect(parseDuration('1.5m')).toBe(90_000);
    expect(parseDuration('250')).toBe(250);
    expect(parseDuration('ten seconds')).toBeUndefined();
    expect(parseDuration(-1)).toBeUndefined();
  });

  it('validates flags and names the bad one in the error', () => {
    const schema = z.object({ metricsPort: schemas.port, etcd: schemas.endpoints, interval: schemas.duration });
    expect(validate(schema, { metricsPort: '9090', etcd: 'http://127.0.0.1:2379, http://127.0.0.1:2380', interval: '2s' })).toEqual({
      metricsPort: 9090,
      etcd: ['http://127.0.0.1:2379', 'http://127.0.0.1:2380'],
      interval: 2000,
    });
    expect(() => validate(schema, { metricsPort: '70000', etcd: 'http://a:1', interval: '1s' })).toThrow(ConfigError);
    expect(() => validate(schema, { metricsPort: '70000', etcd: 'http://a:1', interval: '1s' })).toThrow(/--metrics-port/);
    expect(() => validate(schema, { metricsPort: '1', etcd: 'ftp://a:1', interval: '1s' })).toThrow(/--etcd: must start with http/);
    expect(() => validate(schema, { metricsPort: '1', etcd: 'http://a:1', interval: 'soon' })).toThrow(/--interval: expected a duration/);
  });

  it('takes a value from the environment when the flag is absent, the flag winning', () => {
    process.env.SLUICE_NODE_NAME = 'from-env';
    try {
      const fromEnv = new Command('t').addOption(flag('--node-name <name>', 'node')).parse([], { from: 'user' });
      expect(fromEnv.opts().nodeName).toBe('from-env');
      const fromFlag = new Command('t').addOption(flag('--node-name <name>', 'node')).parse(['--node-name', 'cli'], { from: 'user' });
      expect(fromFlag.opts().nodeName).toBe('cli');
    } finally {
      delete process.env.SLUICE_NODE_NAME;
    }
  });
});

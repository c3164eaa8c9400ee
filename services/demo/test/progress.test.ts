import { describe, expect, it } from 'vitest';
import { Progress } from '../src/progress.ts';

describe('progress lines', () => {
  it('in a pipe: only finished lines, no carriage returns or escapes', () => {
    let out = '';
    const p = new Progress((t) => (out += t), false);
    p.start('etcd');
    p.done('etcd', 'http://127.0.0.1:2379');
    p.start('lab');
    p.skip('lab', 'the lab needs root');
    expect(out).toBe('  ✔ etcd  http://127.0.0.1:2379\n  – lab  skipped: the lab needs root\n');
  });

  it('on a terminal: a pending line that the finished one overwrites', () => {
    let out = '';
    const p = new Progress((t) => (out += t), true);
    p.start('etcd');
    p.done('etcd', 'http://127.0.0.1:2379');
    expect(out).toBe('  … etcd\r\x1b[2K  ✔ etcd  http://127.0.0.1:2379\n');
  });
});

/**
 * Progress lines: "  ✔ etcd  http://127.0.0.1:2379" once a part is up. On a terminal a "  … etcd" line shows while it
 * starts and is overwritten; in a pipe or a file (CI, tests) only the finished lines appear, no carriage returns.
 */
export class Progress {
  private pending: string | undefined;
  constructor(
    private readonly write: (text: string) => void = (t) => process.stdout.write(t),
    private readonly tty = process.stdout.isTTY === true,
  ) {}

  start(what: string): void {
    this.pending = what;
    if (this.tty) this.write(`  … ${what}\r`);
  }

  done(what: string, detail = ''): void {
    this.clear();
    this.write(`  ✔ ${what}${detail ? `  ${detail}` : ''}\n`);
  }

  skip(what: string, why: string): void {
    this.clear();
    this.write(`  – ${what}  skipped: ${why}\n`);
  }

  fail(what: string, why: string): void {
    this.clear();
    this.write(`  ✖ ${what}  ${why}\n`);
  }

  private clear(): void {
    if (this.tty && this.pending !== undefined) this.write('\x1b[2K');
    this.pending = undefined;
  }
}

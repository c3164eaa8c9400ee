/**
 * `-o json|yaml|text` on every command that prints state, in one place: a command that has `--json` gets `-o` too;
 * `-o json` is `--json`, `-o yaml` runs the command with `--json` and prints the same document as YAML.
 */
import { Option, type Command } from 'commander';
import { stringify } from 'yaml';
import { CliError } from './errors.ts';

export const OUTPUT_FORMATS = ['text', 'json', 'yaml'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export const toYaml = (value: unknown): string => stringify(value, { lineWidth: 0 });

interface Output {
  stdout: (text: string) => void;
}

/** Every command below `program` with a --json option gets -o/--output. */
export function addOutputFormats(program: Command, io: Output): void {
  const visit = (cmd: Command) => {
    for (const sub of cmd.commands) visit(sub);
    if (!cmd.options.some((o) => o.long === '--json') || cmd.options.some((o) => o.long === '--output')) return;
    cmd.addOption(new Option('-o, --output <format>', 'output format').choices(OUTPUT_FORMATS));
    let restore: (() => void) | undefined;
    cmd.hook('preAction', (_self, action) => {
      const format = action.opts().output as OutputFormat | undefined;
      if (!format || format === 'text') return;
      if (action.opts().json && format !== 'json') throw new CliError('--json and -o yaml contradict each other', 2);
      action.setOptionValue('json', true);
      if (format !== 'yaml') return;
      // The command prints one JSON document; it is turned into YAML once the command is done.
      const write = io.stdout;
      let buffered = '';
      io.stdout = (text) => void (buffered += text);
      restore = () => {
        io.stdout = write;
        restore = undefined;
        if (!buffered) return;
        try {
          write(toYaml(JSON.parse(buffered)));
        } catch {
          write(buffered);
        }
      };
    });
    cmd.hook('postAction', () => restore?.());
  };
  visit(program);
}

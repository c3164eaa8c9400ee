// The few lint rules that catch real bugs rather than style: a promise nobody awaits or handles (its rejection
// crashes the process or vanishes), and variables or imports nothing uses (usually a half-finished change).
// Type-aware (typescript-eslint's project service reads tsconfig.json). `npm run lint`; part of `npm test`.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    // What tsconfig.json type-checks is what is linted: not the per-package vitest configs, scratch folders, bpf/.
    ignores: ['**/node_modules/**', 'bpf/**', 'dist/**', 'test-results/**', 'scale-runs/**', 'bench/results/**', '.sluice/**', '**/.tmp/**', '**/*.tmp.ts', '**/vitest.config.ts', 'vitest.config.ts', '**/*.js', '**/*.mjs', '**/*.cjs'],
  },
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: true }],
      '@typescript-eslint/no-unused-vars': ['error', { args: 'after-used', argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true }],
    },
  },
);

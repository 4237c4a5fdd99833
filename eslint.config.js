// Lint rules for src/, test/, bench/, bin/ and web/ (formatting is Prettier's: `npm run lint` runs both).
import js from '@eslint/js'
import prettier from 'eslint-config-prettier'
import { defineConfig } from 'eslint/config'
import tseslint from 'typescript-eslint'

export default defineConfig(
  { ignores: ['dist/**', 'build/**', 'node_modules/**'] },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname }
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }
      ],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/consistent-type-exports': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      // an async function with no await is how a synchronous throw becomes a rejection where a
      // caller expects a promise (ChunkStore.put): kept as a choice, not flagged
      '@typescript-eslint/require-await': 'off'
    }
  },
  { files: ['**/*.js'], ...tseslint.configs.disableTypeChecked },
  // the dashboard's page script runs in the browser
  {
    files: ['web/**/*.js'],
    languageOptions: {
      sourceType: 'script',
      globals: { document: 'readonly', fetch: 'readonly', EventSource: 'readonly', Node: 'readonly' }
    }
  },
  prettier,
  // after eslint-config-prettier, which turns max-len off: Prettier cannot split a long string or
  // comment, so those are split by hand
  { rules: { 'max-len': ['error', { code: 120, ignoreUrls: true }] } }
)

/**
 * A database migrated by a newer release is refused, not run against (migrations on open are
 * tested with the features they bring: queued-at.test.ts, attempts.test.ts, claim.test.ts).
 */
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { MIGRATIONS } from '../src/index.js';
import { openStore, reopen } from './helpers.js';

describe('schema version', () => {
  it('refuses a database a newer release has migrated, and leaves it as it was', () => {
    const { store, path } = openStore();
    store.db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    store.close();
    expect(() => reopen(path)).toThrow(`the database ${path} has schema version ${MIGRATIONS.length + 1}, newer than this release knows (${MIGRATIONS.length})`);
    const raw = new Database(path, { readonly: true });
    try {
      expect(raw.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length + 1);
    } finally {
      raw.close();
    }
  });
});
